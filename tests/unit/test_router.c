/* tests/unit/test_router.c - session directory (bind/unbind/lookup/limits/threads)
 * and the RFC 6121 §8.5.2.1.1 bare-JID message routing decision. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <sodium.h>

#include "tether/router.h"
/* The statics (stripes, buckets) are checked after growth. */
#include "../../server/router.c"
#include "../../server/shtab.c"

/* A binding as the tests write it: a resource and a session address. */
struct binding {
	char resource[64];
	struct bus_addr addr;
};

static struct binding tgt(const char *res, uint16_t worker, uint32_t slot, uint32_t gen)
{
	struct binding b;
	memset(&b, 0, sizeof(b));
	b.addr.worker = worker;
	b.addr.slot = slot;
	b.addr.gen = gen;
	snprintf(b.resource, sizeof(b.resource), "%s", res);
	return b;
}

static int bind_as(struct router *r, const char *bare, const struct binding *b, struct route_target *old)
{
	return router_bind(r, bare, b->resource, &b->addr, &old->addr);
}

static void unbind_as(struct router *r, const char *bare, const char *res, uint16_t worker,
		      uint32_t slot, uint32_t gen)
{
	struct bus_addr a = { .node = BUS_NODE_SELF, .worker = worker, .slot = slot, .gen = gen };
	router_unbind(r, bare, res, &a);
}

/* Targets carry no resource name (only an address): <res> documents. */
static void assert_target(const struct route_target *t, const char *res, uint16_t worker,
			  uint32_t slot, uint32_t gen)
{
	(void)res;
	assert_int_equal(t->addr.node, BUS_NODE_SELF);
	assert_int_equal(t->addr.worker, worker);
	assert_int_equal(t->addr.slot, slot);
	assert_int_equal(t->addr.gen, gen);
}

static int setup(void **state)
{
	assert_int_not_equal(sodium_init(), -1);
	*state = router_new();
	return *state ? 0 : -1;
}

static int teardown(void **state)
{
	router_free(*state);
	return 0;
}

/* ------------------------------------------------------------ directory */

static void test_bind_get_unbind(void **state)
{
	struct router *r = *state;
	struct binding t = tgt("balcony", 3, 17, 5);
	struct route_target out, old;
	memset(&old, 0x5a, sizeof(old));

	assert_int_equal(router_get_full(r, "juliet@example.com", "balcony", &out), -ENOENT);
	assert_int_equal(router_get_all(r, "juliet@example.com", &out, 1), 0);

	assert_int_equal(bind_as(r, "juliet@example.com", &t, &old), 0);
	assert_int_equal(router_get_full(r, "juliet@example.com", "balcony", &out), 0);
	assert_target(&out, "balcony", 3, 17, 5);
	assert_int_equal(out.priority, 0);
	assert_int_equal(out.available, 0);

	/* Other accounts and other resources are not found. */
	assert_int_equal(router_get_full(r, "romeo@example.com", "balcony", &out), -ENOENT);
	assert_int_equal(router_get_full(r, "juliet@example.com", "Balcony", &out), -ENOENT);
	assert_int_equal(router_get_full(r, "juliet@example.co", "balcony", &out), -ENOENT);

	struct binding t2 = tgt("chamber", 1, 2, 3);
	assert_int_equal(bind_as(r, "juliet@example.com", &t2, &old), 0);
	struct route_target all[8];
	assert_int_equal(router_get_all(r, "juliet@example.com", all, 8), 2);
	int seen_b = 0, seen_c = 0;
	for (int i = 0; i < 2; i++) {
		if (all[i].addr.slot == 17) {
			assert_target(&all[i], "balcony", 3, 17, 5);
			seen_b++;
		} else {
			assert_target(&all[i], "chamber", 1, 2, 3);
			seen_c++;
		}
	}
	assert_int_equal(seen_b, 1);
	assert_int_equal(seen_c, 1);
	/* <max> caps the copy. */
	assert_int_equal(router_get_all(r, "juliet@example.com", all, 1), 1);
	assert_int_equal(router_get_all(r, "juliet@example.com", all, 0), 0);

	unbind_as(r, "juliet@example.com", "balcony", 3, 17, 5);
	assert_int_equal(router_get_full(r, "juliet@example.com", "balcony", &out), -ENOENT);
	assert_int_equal(router_get_full(r, "juliet@example.com", "chamber", &out), 0);
	assert_int_equal(router_get_all(r, "juliet@example.com", all, 8), 1);

	unbind_as(r, "juliet@example.com", "chamber", 1, 2, 3);
	assert_int_equal(router_get_all(r, "juliet@example.com", all, 8), 0);

	/* The account is gone; binding again starts afresh. */
	assert_int_equal(bind_as(r, "juliet@example.com", &t, &old), 0);
	assert_int_equal(router_get_all(r, "juliet@example.com", all, 8), 1);

	/* Unbinding what is not there is harmless. */
	unbind_as(r, "nobody@example.com", "x", 0, 0, 0);
	unbind_as(r, "juliet@example.com", "nothere", 3, 17, 5);
	assert_int_equal(router_get_all(r, "juliet@example.com", all, 8), 1);
}

static void test_rebind_conflict(void **state)
{
	struct router *r = *state;
	struct binding a = tgt("phone", 0, 10, 1), b = tgt("phone", 2, 99, 7);
	struct route_target old, out;
	assert_int_equal(bind_as(r, "romeo@example.net", &a, &old), 0);
	router_set_presence(r, "romeo@example.net", "phone", 1, 5);

	memset(&old, 0, sizeof(old));
	assert_int_equal(bind_as(r, "romeo@example.net", &b, &old), 1);
	assert_target(&old, "phone", 0, 10, 1);

	assert_int_equal(router_get_full(r, "romeo@example.net", "phone", &out), 0);
	assert_target(&out, "phone", 2, 99, 7);
	/* Still one resource, not two. */
	struct route_target all[4];
	assert_int_equal(router_get_all(r, "romeo@example.net", all, 4), 1);

	/* The kicked session's late unbind must not remove the new one. */
	unbind_as(r, "romeo@example.net", "phone", 0, 10, 1);
	assert_int_equal(router_get_full(r, "romeo@example.net", "phone", &out), 0);
	assert_target(&out, "phone", 2, 99, 7);
}

static void test_unbind_stale(void **state)
{
	struct router *r = *state;
	struct binding t = tgt("r", 4, 100, 9);
	struct route_target old, out;
	assert_int_equal(bind_as(r, "a@b", &t, &old), 0);

	unbind_as(r, "a@b", "r", 4, 100, 8);  /* old generation */
	unbind_as(r, "a@b", "r", 4, 101, 9);  /* other slot */
	unbind_as(r, "a@b", "r", 5, 100, 9);  /* other worker */
	assert_int_equal(router_get_full(r, "a@b", "r", &out), 0);
	assert_target(&out, "r", 4, 100, 9);

	unbind_as(r, "a@b", "r", 4, 100, 9);
	assert_int_equal(router_get_full(r, "a@b", "r", &out), -ENOENT);
}

/* Unbinding from the middle keeps every other resource reachable. */
static void test_unbind_middle(void **state)
{
	struct router *r = *state;
	struct route_target old, out;
	char res[16];
	for (uint32_t i = 0; i < 10; i++) {
		snprintf(res, sizeof(res), "r%u", i);
		struct binding t = tgt(res, 1, i, i + 100);
		assert_int_equal(bind_as(r, "m@x", &t, &old), 0);
	}
	for (uint32_t i = 0; i < 10; i += 3) {
		snprintf(res, sizeof(res), "r%u", i);
		unbind_as(r, "m@x", res, 1, i, i + 100);
	}
	for (uint32_t i = 0; i < 10; i++) {
		snprintf(res, sizeof(res), "r%u", i);
		if (i % 3 == 0) {
			assert_int_equal(router_get_full(r, "m@x", res, &out), -ENOENT);
		} else {
			assert_int_equal(router_get_full(r, "m@x", res, &out), 0);
			assert_target(&out, res, 1, i, i + 100);
		}
	}
	struct route_target all[16];
	assert_int_equal(router_get_all(r, "m@x", all, 16), 6);
}

static void test_max_resources(void **state)
{
	struct router *r = *state;
	struct route_target old, out;
	char res[16];
	for (uint32_t i = 0; i < ROUTER_MAX_RESOURCES; i++) {
		snprintf(res, sizeof(res), "res%u", i);
		struct binding t = tgt(res, 0, i, 1);
		assert_int_equal(bind_as(r, "busy@example.com", &t, &old), 0);
	}
	struct binding extra = tgt("one-too-many", 0, 999, 1);
	assert_int_equal(bind_as(r, "busy@example.com", &extra, &old), -EMLINK);
	assert_int_equal(router_get_full(r, "busy@example.com", "one-too-many", &out), -ENOENT);

	static struct route_target all[ROUTER_MAX_RESOURCES + 8];
	assert_int_equal(router_get_all(r, "busy@example.com", all, ROUTER_MAX_RESOURCES + 8),
			 ROUTER_MAX_RESOURCES);

	/* At the limit, replacing an existing resource is still allowed. */
	struct binding again = tgt("res7", 1, 7, 2);
	assert_int_equal(bind_as(r, "busy@example.com", &again, &old), 1);
	assert_target(&old, "res7", 0, 7, 1);

	/* Another account is not affected. */
	assert_int_equal(bind_as(r, "idle@example.com", &extra, &old), 0);

	/* Freeing one slot makes room again. */
	unbind_as(r, "busy@example.com", "res3", 0, 3, 1);
	assert_int_equal(bind_as(r, "busy@example.com", &extra, &old), 0);
	struct binding more = tgt("more", 0, 1, 1);
	assert_int_equal(bind_as(r, "busy@example.com", &more, &old), -EMLINK);
}

static void test_presence(void **state)
{
	struct router *r = *state;
	struct binding a = tgt("a", 0, 1, 1), b = tgt("b", 0, 2, 1);
	struct route_target old, out;
	assert_int_equal(bind_as(r, "p@x", &a, &old), 0);
	assert_int_equal(bind_as(r, "p@x", &b, &old), 0);

	router_set_presence(r, "p@x", "a", 1, 10);
	router_set_presence(r, "p@x", "b", 1, -3);
	assert_int_equal(router_get_full(r, "p@x", "a", &out), 0);
	assert_int_equal(out.available, 1);
	assert_int_equal(out.priority, 10);
	assert_int_equal(router_get_full(r, "p@x", "b", &out), 0);
	assert_int_equal(out.available, 1);
	assert_int_equal(out.priority, -3);

	router_set_presence(r, "p@x", "a", 0, 0);
	assert_int_equal(router_get_full(r, "p@x", "a", &out), 0);
	assert_int_equal(out.available, 0);

	/* Unknown account or resource: no-op, no crash, nothing created. */
	router_set_presence(r, "p@x", "c", 1, 1);
	router_set_presence(r, "q@x", "a", 1, 1);
	assert_int_equal(router_get_full(r, "p@x", "c", &out), -ENOENT);
	assert_int_equal(router_get_full(r, "q@x", "a", &out), -ENOENT);

	/* Full pipeline: directory -> pick. */
	router_set_presence(r, "p@x", "a", 1, 1);
	router_set_presence(r, "p@x", "b", 1, 2);
	struct route_target all[4];
	size_t pick[4];
	size_t n = router_get_all(r, "p@x", all, 4);
	assert_int_equal(n, 2);
	assert_int_equal(router_pick_for_message(all, n, pick, 0), 1);
	assert_int_equal(all[pick[0]].addr.slot, 2); /* "b" */
}

/* --------------------------------------------------------------- picking */

static struct route_target pt(int available, int priority)
{
	struct route_target t;
	memset(&t, 0, sizeof(t));
	t.available = available;
	t.priority = priority;
	return t;
}

static void test_pick(void **state)
{
	(void)state;
	size_t pick[8];

	/* Nothing bound. */
	assert_int_equal(router_pick_for_message(NULL, 0, pick, 0), 0);

	/* Highest non-negative priority wins. */
	struct route_target t1[] = { pt(1, 1), pt(1, 5), pt(1, 0), pt(1, 4) };
	assert_int_equal(router_pick_for_message(t1, 4, pick, 0), 1);
	assert_int_equal(pick[0], 1);

	/* Ties: every one of them, in order. */
	struct route_target t2[] = { pt(1, 3), pt(1, 1), pt(1, 3), pt(1, 3), pt(1, -1) };
	assert_int_equal(router_pick_for_message(t2, 5, pick, 0), 3);
	assert_int_equal(pick[0], 0);
	assert_int_equal(pick[1], 2);
	assert_int_equal(pick[2], 3);
	/* headline: every available resource with a non-negative priority */
	size_t nonneg = 0;
	for (size_t i = 0; i < 5; i++)
		nonneg += t2[i].available && t2[i].priority >= 0;
	assert_int_equal(router_pick_for_message(t2, 5, pick, 1), nonneg);

	/* Priority 0 is eligible. */
	struct route_target t3[] = { pt(1, 0), pt(1, -1), pt(1, 0) };
	assert_int_equal(router_pick_for_message(t3, 3, pick, 0), 2);
	assert_int_equal(pick[0], 0);
	assert_int_equal(pick[1], 2);

	/* Negative only: none. */
	struct route_target t4[] = { pt(1, -1), pt(1, -128), pt(1, -5) };
	assert_int_equal(router_pick_for_message(t4, 3, pick, 0), 0);

	/* Unavailable resources are ignored, even with the highest priority. */
	struct route_target t5[] = { pt(0, 100), pt(1, 2), pt(0, 2), pt(1, 2) };
	assert_int_equal(router_pick_for_message(t5, 4, pick, 0), 2);
	assert_int_equal(pick[0], 1);
	assert_int_equal(pick[1], 3);

	/* Only unavailable: none (also none with positive priorities). */
	struct route_target t6[] = { pt(0, 5), pt(0, 0) };
	assert_int_equal(router_pick_for_message(t6, 2, pick, 0), 0);

	/* Unavailable-with-high-priority plus negatives-only available: none. */
	struct route_target t7[] = { pt(0, 50), pt(1, -1) };
	assert_int_equal(router_pick_for_message(t7, 2, pick, 0), 0);

	/* Maximal priority values. */
	struct route_target t8[] = { pt(1, 127), pt(1, -128), pt(1, 127) };
	assert_int_equal(router_pick_for_message(t8, 3, pick, 0), 2);
	assert_int_equal(pick[0], 0);
	assert_int_equal(pick[1], 2);
}

/* ------------------------------------------------------- many accounts */

static void test_many_accounts(void **state)
{
	struct router *r = *state;
	enum { N = 10000 };
	char bare[64];
	struct route_target old, out;
	for (uint32_t i = 0; i < N; i++) {
		snprintf(bare, sizeof(bare), "user%u@example.com", i);
		struct binding a = tgt("home", (uint16_t)(i % 7), i, 1);
		struct binding b = tgt("work", (uint16_t)(i % 5), i + N, 2);
		assert_int_equal(bind_as(r, bare, &a, &old), 0);
		assert_int_equal(bind_as(r, bare, &b, &old), 0);
	}
	/* The tables grew: 10000 accounts over 64 stripes of 64 initial buckets;
	 * every stripe keeps its load factor <= 1 and counts every account. */
	size_t total = 0, grown = 0;
	for (int s = 0; s < SHTAB_STRIPES; s++) {
		struct shtab_stripe *st = &r->tab->s[s];
		size_t chained = 0;
		for (size_t b = 0; b < st->nbuckets; b++)
			for (struct shtab_node *n = st->buckets[b]; n; n = n->next) {
				assert_int_equal((n->hash >> 8) & (st->nbuckets - 1), b);
				chained++;
			}
		assert_int_equal(chained, st->count);
		assert_true(st->count <= st->nbuckets);
		assert_int_equal(st->nbuckets & (st->nbuckets - 1), 0);
		total += st->count;
		grown += st->nbuckets > 64;
	}
	assert_int_equal(total, N);
	assert_true(grown > SHTAB_STRIPES / 2);
	for (uint32_t i = 0; i < N; i++) {
		snprintf(bare, sizeof(bare), "user%u@example.com", i);
		assert_int_equal(router_get_full(r, bare, "home", &out), 0);
		assert_target(&out, "home", (uint16_t)(i % 7), i, 1);
		assert_int_equal(router_get_full(r, bare, "work", &out), 0);
		assert_target(&out, "work", (uint16_t)(i % 5), i + N, 2);
	}
	/* Drop every odd account entirely and "home" of every even one. */
	for (uint32_t i = 0; i < N; i++) {
		snprintf(bare, sizeof(bare), "user%u@example.com", i);
		if (i & 1) {
			unbind_as(r, bare, "home", (uint16_t)(i % 7), i, 1);
			unbind_as(r, bare, "work", (uint16_t)(i % 5), i + N, 2);
		} else {
			unbind_as(r, bare, "home", (uint16_t)(i % 7), i, 1);
		}
	}
	struct route_target all[4];
	for (uint32_t i = 0; i < N; i++) {
		snprintf(bare, sizeof(bare), "user%u@example.com", i);
		assert_int_equal(router_get_full(r, bare, "home", &out), -ENOENT);
		assert_int_equal(router_get_all(r, bare, all, 4), (i & 1) ? 0 : 1);
	}
	/* Rebinding the dropped ones works after all that churn. */
	for (uint32_t i = 1; i < N; i += 2) {
		snprintf(bare, sizeof(bare), "user%u@example.com", i);
		struct binding a = tgt("again", 0, i, 3);
		assert_int_equal(bind_as(r, bare, &a, &old), 0);
	}
	for (uint32_t i = 0; i < N; i++) {
		snprintf(bare, sizeof(bare), "user%u@example.com", i);
		assert_int_equal(router_get_all(r, bare, all, 4), 1);
	}
}

/* ------------------------------------------------------------- threads */

struct thr {
	struct router *r;
	int id;
	int fails;
};

enum { THR_ACCOUNTS = 4000, THR_SHARED = 30 };

static void *thr_main(void *p)
{
	struct thr *t = p;
	char bare[64], res[32];
	struct route_target old, out;
	for (int i = 0; i < THR_ACCOUNTS; i++) {
		/* Own accounts. */
		snprintf(bare, sizeof(bare), "t%d-u%d@example.com", t->id, i);
		struct binding a = tgt("r", (uint16_t)t->id, (uint32_t)i, 1);
		if (bind_as(t->r, bare, &a, &old) != 0)
			t->fails++;
		if (router_get_full(t->r, bare, "r", &out) || out.addr.slot != (uint32_t)i)
			t->fails++;
		/* Accounts both threads bind into, each with its own resources. */
		snprintf(bare, sizeof(bare), "shared%d@example.com", i % 50);
		if (i < 50 * THR_SHARED) {
			snprintf(res, sizeof(res), "t%d-%d", t->id, i / 50);
			struct binding s = tgt(res, (uint16_t)t->id, (uint32_t)i, 1);
			if (bind_as(t->r, bare, &s, &old) != 0)
				t->fails++;
			router_set_presence(t->r, bare, res, 1, i % 3);
		}
		/* Churn: bind and unbind a temporary account. */
		snprintf(bare, sizeof(bare), "tmp%d@example.com", i % 10);
		snprintf(res, sizeof(res), "t%d", t->id);
		struct binding tmp = tgt(res, (uint16_t)t->id, (uint32_t)i, 7);
		if (bind_as(t->r, bare, &tmp, &old) != 0)
			t->fails++;
		unbind_as(t->r, bare, res, (uint16_t)t->id, (uint32_t)i, 7);
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct router *r = *state;
	pthread_t th[2];
	struct thr arg[2];
	for (int i = 0; i < 2; i++) {
		arg[i] = (struct thr){ r, i, 0 };
		assert_int_equal(pthread_create(&th[i], NULL, thr_main, &arg[i]), 0);
	}
	for (int i = 0; i < 2; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(arg[i].fails, 0);
	}
	char bare[64];
	struct route_target out, all[ROUTER_MAX_RESOURCES];
	for (int id = 0; id < 2; id++) {
		for (int i = 0; i < THR_ACCOUNTS; i++) {
			snprintf(bare, sizeof(bare), "t%d-u%d@example.com", id, i);
			assert_int_equal(router_get_full(r, bare, "r", &out), 0);
			assert_target(&out, "r", (uint16_t)id, (uint32_t)i, 1);
		}
	}
	for (int k = 0; k < 50; k++) {
		snprintf(bare, sizeof(bare), "shared%d@example.com", k);
		assert_int_equal(router_get_all(r, bare, all, ROUTER_MAX_RESOURCES), 2 * THR_SHARED);
	}
	for (int k = 0; k < 10; k++) {
		snprintf(bare, sizeof(bare), "tmp%d@example.com", k);
		assert_int_equal(router_get_all(r, bare, all, ROUTER_MAX_RESOURCES), 0);
	}
}

/* ------------------------------------------------------- random resource */

static int b64url(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

static void test_random_resource(void **state)
{
	(void)state;
	enum { N = 200 };
	static char seen[N][17];
	for (int i = 0; i < N; i++) {
		char buf[18];
		memset(buf, 'Z', sizeof(buf));
		router_random_resource(buf);
		assert_int_equal(strlen(buf), 16);
		assert_int_equal(buf[17], 'Z'); /* wrote no more than 17 bytes */
		for (int j = 0; j < 16; j++)
			assert_true(b64url(buf[j]));
		for (int j = 0; j < i; j++)
			assert_string_not_equal(buf, seen[j]);
		memcpy(seen[i], buf, 17);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_bind_get_unbind, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rebind_conflict, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unbind_stale, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unbind_middle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_max_resources, setup, teardown),
		cmocka_unit_test_setup_teardown(test_presence, setup, teardown),
		cmocka_unit_test(test_pick),
		cmocka_unit_test_setup_teardown(test_many_accounts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_random_resource, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
