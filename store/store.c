/* store/store.c - store_open(): picks a backend by name. */
#include "tether/store.h"

#include <stdio.h>
#include <string.h>

struct store *store_open(const char *backend, const char *path, char *err, size_t errlen)
{
	if (!backend || !path) {
		snprintf(err, errlen, "store: backend and path are required");
		return NULL;
	}
	if (strcmp(backend, "memory") == 0)
		return store_memory_open(path, err, errlen);
	snprintf(err, errlen, "store: unknown backend '%s' (known: memory)", backend);
	return NULL;
}
