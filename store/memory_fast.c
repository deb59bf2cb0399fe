/* store/memory_fast.c - the memory backend's FAST token slots by (account, user-agent id). */
#include "memory_sm.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

struct fentry {
	struct fentry *next;
	struct fast_slots slots;
	size_t bare_len;
	char key[];           /* bare NUL ua_id NUL */
};

/* Few entries (one per device per account) and rare access (logins):
 * one list behind one mutex is enough, and easy to wipe. */
struct fast_table {
	pthread_mutex_t lock;
	struct fentry *head;
};

struct fast_table *fast_table_new(void)
{
	struct fast_table *t = calloc(1, sizeof(*t));
	if (t)
		pthread_mutex_init(&t->lock, NULL);
	return t;
}

static void fentry_free(struct fentry *e)
{
	sodium_memzero(&e->slots, sizeof(e->slots));
	free(e);
}

void fast_table_free(struct fast_table *t)
{
	if (!t)
		return;
	for (struct fentry *e = t->head, *n; e; e = n) {
		n = e->next;
		fentry_free(e);
	}
	pthread_mutex_destroy(&t->lock);
	free(t);
}

static struct fentry **find(struct fast_table *t, const char *bare, const char *ua_id)
{
	struct fentry **pp = &t->head;
	for (; *pp; pp = &(*pp)->next)
		if (!strcmp((*pp)->key, bare) && !strcmp((*pp)->key + (*pp)->bare_len + 1, ua_id))
			break;
	return pp;
}

int fast_table_get(struct fast_table *t, const char *bare, const char *ua_id, struct fast_slots *out)
{
	pthread_mutex_lock(&t->lock);
	struct fentry *e = *find(t, bare, ua_id);
	if (e)
		*out = e->slots;
	pthread_mutex_unlock(&t->lock);
	return e ? 0 : -ENOENT;
}

int fast_table_put(struct fast_table *t, const char *bare, const char *ua_id, const struct fast_slots *in)
{
	int rc = 0;
	pthread_mutex_lock(&t->lock);
	struct fentry **pp = find(t, bare, ua_id), *e = *pp;
	if (!in->fresh.valid && !in->current.valid) {
		if (e) {
			*pp = e->next;
			fentry_free(e);
		}
	} else if (e) {
		e->slots = *in;
	} else {
		size_t bl = strlen(bare), ul = strlen(ua_id);
		e = calloc(1, sizeof(*e) + bl + ul + 2);
		if (!e) {
			rc = -ENOMEM;
		} else {
			memcpy(e->key, bare, bl + 1);
			memcpy(e->key + bl + 1, ua_id, ul + 1);
			e->bare_len = bl;
			e->slots = *in;
			e->next = t->head;
			t->head = e;
		}
	}
	pthread_mutex_unlock(&t->lock);
	return rc;
}

void fast_table_revoke(struct fast_table *t, const char *bare)
{
	pthread_mutex_lock(&t->lock);
	for (struct fentry **pp = &t->head; *pp;) {
		struct fentry *e = *pp;
		if (!strcmp(e->key, bare)) {
			*pp = e->next;
			fentry_free(e);
		} else {
			pp = &e->next;
		}
	}
	pthread_mutex_unlock(&t->lock);
}
