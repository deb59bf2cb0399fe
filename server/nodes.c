/* server/nodes.c - cluster node names as small numbers (see nodes.h).
 *
 * An append-only array: names are never removed, so a pointer handed out
 * by nodes_name() stays valid, and a reader needs no lock. Writers (a new
 * name) serialize on a mutex and publish the slot before the count
 * (release); readers load the count (acquire) and scan. A cluster has a
 * handful of nodes: a linear scan of a few short names costs less than
 * hashing one. Slot 0 is BUS_NODE_SELF. */
#include "tether/nodes.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tether/bus.h"

static char self_name[NODES_NAME_MAX + 1];
static _Atomic(const char *) names[NODES_MAX] = { self_name };
static atomic_uint count = 1;          /* slot 0 (self) always exists */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t boot_once = PTHREAD_ONCE_INIT;
static char boot[NODES_BOOT_LEN + 1];

static void boot_make(void)
{
	uint8_t r[NODES_BOOT_LEN / 2];
	randombytes_buf(r, sizeof(r));
	sodium_bin2hex(boot, sizeof(boot), r, sizeof(r));
}

const char *nodes_boot(void)
{
	pthread_once(&boot_once, boot_make);
	return boot;
}

_Static_assert(BUS_NODE_SELF == 0, "slot 0 of the table is this node");

static int same(const char *a, const char *b, size_t len)
{
	return !strncmp(a, b, len) && a[len] == 0;
}

static uint16_t find(const char *name, size_t len, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		const char *s = atomic_load_explicit(&names[i], memory_order_acquire);
		if (s && same(s, name, len))
			return (uint16_t)i;
	}
	return NODES_NONE;
}

int nodes_set_self(const char *name)
{
	size_t len = strlen(name);
	if (!len || len > NODES_NAME_MAX)
		return -EINVAL;
	pthread_mutex_lock(&lock);
	int rc = 0;
	uint16_t had = find(name, len, atomic_load_explicit(&count, memory_order_relaxed));
	if ((self_name[0] && strcmp(self_name, name)) || (had != NODES_NONE && had != BUS_NODE_SELF))
		rc = -EBUSY; /* renamed, or the name already stands for another node */
	else
		memcpy(self_name, name, len + 1);
	pthread_mutex_unlock(&lock);
	return rc;
}

uint16_t nodes_intern_n(const char *name, size_t len)
{
	if (!len || len > NODES_ID_MAX || memchr(name, 0, len))
		return NODES_NONE;
	uint16_t id = find(name, len, atomic_load_explicit(&count, memory_order_acquire));
	if (id != NODES_NONE)
		return id;
	pthread_mutex_lock(&lock);
	unsigned n = atomic_load_explicit(&count, memory_order_relaxed);
	id = find(name, len, n);
	if (id == NODES_NONE && n < NODES_MAX) {
		char *copy = malloc(len + 1);
		if (copy) {
			memcpy(copy, name, len);
			copy[len] = 0;
			atomic_store_explicit(&names[n], copy, memory_order_release);
			atomic_store_explicit(&count, n + 1, memory_order_release);
			id = (uint16_t)n;
		}
	}
	pthread_mutex_unlock(&lock);
	return id;
}

uint16_t nodes_intern(const char *name)
{
	return nodes_intern_n(name, strlen(name));
}

const char *nodes_name(uint16_t id)
{
	if (id >= atomic_load_explicit(&count, memory_order_acquire))
		return NULL;
	return atomic_load_explicit(&names[id], memory_order_acquire);
}
