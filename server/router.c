/* server/router.c - the node-local session directory and routing decisions.
 *
 * bare JID -> bound resources, in a striped hash table (shtab.h): routing
 * reads under a shared lock, binds and presence write, and two accounts
 * rarely share a stripe. Entries are copied out under the lock, so callers
 * never hold pointers into the directory. */
#include "tether/router.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tether/shtab.h"

#define ROUTER_BUCKETS 64 /* initial buckets per stripe */

struct res_entry {
	struct bus_addr addr;
	int priority;
	int available;
	int congested;
	int carbons;
	char *resource;
};

struct account {
	struct shtab_node node;  /* first: the table's link */
	struct res_entry *res;
	unsigned nres, cap;
	char bare[];
};

struct router {
	struct shtab *tab;
};

static int account_match(const struct shtab_node *n, const char *bare)
{
	return !strcmp(((const struct account *)n)->bare, bare);
}

static void account_free(struct account *a)
{
	for (unsigned i = 0; i < a->nres; i++)
		free(a->res[i].resource);
	free(a->res);
	free(a);
}

static void account_node_free(struct shtab_node *n, void *ud)
{
	(void)ud;
	account_free((struct account *)n);
}

struct router *router_new(void)
{
	struct router *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->tab = shtab_new(account_match, ROUTER_BUCKETS);
	if (!r->tab) {
		free(r);
		return NULL;
	}
	return r;
}

void router_free(struct router *r)
{
	if (!r)
		return;
	shtab_free(r->tab, account_node_free);
	free(r);
}

/* Locks the stripe of <bare> in <mode>; *<a> = its account or NULL. */
static struct shtab_stripe *lock_account(struct router *r, const char *bare, enum shtab_mode mode,
					 uint64_t *hash, struct account **a)
{
	uint64_t h = shtab_hash(r->tab, bare);
	struct shtab_stripe *s = shtab_lock(r->tab, h, mode);
	*a = (struct account *)shtab_find(s, h, bare);
	if (hash)
		*hash = h;
	return s;
}

static struct account *add_account(struct shtab_stripe *s, uint64_t h, const char *bare)
{
	size_t len = strlen(bare);
	struct account *a = calloc(1, sizeof(*a) + len + 1);
	if (!a)
		return NULL;
	memcpy(a->bare, bare, len + 1);
	a->node.hash = h;
	shtab_insert(s, &a->node);
	return a;
}

static void remove_account(struct shtab_stripe *s, struct account *a)
{
	shtab_remove(s, &a->node);
	account_free(a);
}

static struct res_entry *find_res(struct account *a, const char *resource)
{
	for (unsigned i = 0; a && i < a->nres; i++)
		if (!strcmp(a->res[i].resource, resource))
			return &a->res[i];
	return NULL;
}

static void copy_out(const struct res_entry *e, struct route_target *t)
{
	t->addr = e->addr;
	t->priority = (int8_t)e->priority;
	t->available = (uint8_t)e->available;
	t->congested = (uint8_t)e->congested;
	t->carbons = (uint8_t)e->carbons;
}

int router_bind(struct router *r, const char *bare, const char *resource,
		const struct bus_addr *at, struct bus_addr *old)
{
	uint64_t h;
	struct account *a;
	int rc = 0;
	struct shtab_stripe *s = lock_account(r, bare, SHTAB_WRITE, &h, &a);
	if (!a && !(a = add_account(s, h, bare))) {
		rc = -ENOMEM;
		goto out;
	}
	struct res_entry *e = find_res(a, resource);
	if (e) {
		*old = e->addr;
		rc = 1;
	} else {
		if (a->nres >= ROUTER_MAX_RESOURCES) {
			rc = -EMLINK;
			goto out;
		}
		if (a->nres == a->cap) {
			unsigned cap = a->cap ? a->cap * 2 : 2;
			struct res_entry *n = realloc(a->res, cap * sizeof(*n));
			if (!n) {
				rc = -ENOMEM;
				goto out;
			}
			a->res = n;
			a->cap = cap;
		}
		a->res[a->nres].resource = strdup(resource);
		if (!a->res[a->nres].resource) {
			rc = -ENOMEM;
			goto out;
		}
		e = &a->res[a->nres++];
	}
	e->addr = *at;
	e->priority = 0;
	e->available = 0;
	e->congested = 0;
	e->carbons = 0;
out:
	if (a && !a->nres)
		remove_account(s, a);
	shtab_unlock(s);
	return rc;
}

void router_unbind(struct router *r, const char *bare, const char *resource,
		   const struct bus_addr *at)
{
	struct account *a;
	struct shtab_stripe *s = lock_account(r, bare, SHTAB_WRITE, NULL, &a);
	struct res_entry *e = find_res(a, resource);
	if (e && bus_addr_eq(&e->addr, at)) {
		free(e->resource);
		*e = a->res[--a->nres];
		if (!a->nres)
			remove_account(s, a);
	}
	shtab_unlock(s);
}

void router_set_presence(struct router *r, const char *bare, const char *resource,
			 int available, int priority)
{
	struct account *a;
	struct shtab_stripe *s = lock_account(r, bare, SHTAB_WRITE, NULL, &a);
	struct res_entry *e = find_res(a, resource);
	if (e) {
		e->available = available;
		e->priority = priority;
	}
	shtab_unlock(s);
}

void router_set_congested(struct router *r, const char *bare, const char *resource,
			  const struct bus_addr *at, int on)
{
	struct account *a;
	struct shtab_stripe *s = lock_account(r, bare, SHTAB_WRITE, NULL, &a);
	struct res_entry *e = find_res(a, resource);
	if (e && bus_addr_eq(&e->addr, at))
		e->congested = on;
	shtab_unlock(s);
}

void router_set_carbons(struct router *r, const char *bare, const char *resource,
			const struct bus_addr *at, int on)
{
	struct account *a;
	struct shtab_stripe *s = lock_account(r, bare, SHTAB_WRITE, NULL, &a);
	struct res_entry *e = find_res(a, resource);
	if (e && bus_addr_eq(&e->addr, at))
		e->carbons = on;
	shtab_unlock(s);
}

int router_get_full(struct router *r, const char *bare, const char *resource,
		    struct route_target *out)
{
	struct account *a;
	int rc = -ENOENT;
	struct shtab_stripe *s = lock_account(r, bare, SHTAB_READ, NULL, &a);
	struct res_entry *e = find_res(a, resource);
	if (e) {
		copy_out(e, out);
		rc = 0;
	}
	shtab_unlock(s);
	return rc;
}

size_t router_get_all(struct router *r, const char *bare, struct route_target *out, size_t max)
{
	struct account *a;
	size_t n = 0;
	struct shtab_stripe *s = lock_account(r, bare, SHTAB_READ, NULL, &a);
	for (unsigned i = 0; a && i < a->nres && n < max; i++)
		copy_out(&a->res[i], &out[n++]);
	shtab_unlock(s);
	return n;
}

size_t router_pick_for_message(const struct route_target *t, size_t n, size_t *pick,
			       int all_non_negative)
{
	int best = -1;
	size_t count = 0;
	for (size_t i = 0; i < n; i++)
		if (t[i].available && t[i].priority >= 0 && t[i].priority > best)
			best = t[i].priority;
	if (best < 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (t[i].available && (all_non_negative ? t[i].priority >= 0 : t[i].priority == best))
			pick[count++] = i;
	return count;
}

void router_random_resource(char out[17])
{
	unsigned char raw[12];
	randombytes_buf(raw, sizeof(raw));
	sodium_bin2base64(out, 17, raw, sizeof(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}
