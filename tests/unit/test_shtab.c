/* tests/unit/test_shtab.c - the striped hash table: find, insert, remove,
 * each, growth (invariants checked on the statics), and two threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>
#include <sodium.h>

#include "tether/shtab.h"
/* The statics (stripes, buckets, counts) are checked after growth. */
#include "../../server/shtab.c"

struct item {
	struct shtab_node node;  /* first */
	int value;
	char key[32];
};

static int item_match(const struct shtab_node *n, const char *key)
{
	return !strcmp(((const struct item *)n)->key, key);
}

static void item_free(struct shtab_node *n, void *ud)
{
	(void)ud;
	free(n);
}

static struct item *add(struct shtab *t, const char *key, int value)
{
	struct item *it = calloc(1, sizeof(*it));
	assert_non_null(it);
	snprintf(it->key, sizeof(it->key), "%s", key);
	it->value = value;
	it->node.hash = shtab_hash(t, key);
	struct shtab_stripe *s = shtab_lock(t, it->node.hash, SHTAB_WRITE);
	assert_null(shtab_find(s, it->node.hash, key));
	shtab_insert(s, &it->node);
	shtab_unlock(s);
	return it;
}

static struct item *get(struct shtab *t, const char *key)
{
	uint64_t h = shtab_hash(t, key);
	struct shtab_stripe *s = shtab_lock(t, h, SHTAB_READ);
	struct item *it = (struct item *)shtab_find(s, h, key);
	shtab_unlock(s);
	return it;
}

static void del(struct shtab *t, const char *key)
{
	uint64_t h = shtab_hash(t, key);
	struct shtab_stripe *s = shtab_lock(t, h, SHTAB_WRITE);
	struct shtab_node *n = shtab_find(s, h, key);
	assert_non_null(n);
	shtab_remove(s, n);
	shtab_unlock(s);
	free(n);
}

static void check_invariants(struct shtab *t, size_t want_total)
{
	size_t total = 0;
	for (int i = 0; i < SHTAB_STRIPES; i++) {
		struct shtab_stripe *s = &t->s[i];
		size_t chained = 0;
		assert_int_equal(s->nbuckets & (s->nbuckets - 1), 0);
		for (size_t b = 0; b < s->nbuckets; b++)
			for (struct shtab_node *n = s->buckets[b]; n; n = n->next) {
				assert_int_equal(n->hash % SHTAB_STRIPES, (uint64_t)i);
				assert_int_equal((n->hash >> 8) & (s->nbuckets - 1), b);
				chained++;
			}
		assert_int_equal(chained, s->count);
		assert_true(s->count <= s->nbuckets);
		total += s->count;
	}
	assert_int_equal(total, want_total);
}

static void test_basic(void **state)
{
	(void)state;
	struct shtab *t = shtab_new(item_match, 4);
	assert_non_null(t);
	assert_null(get(t, "a"));
	add(t, "a", 1);
	add(t, "b", 2);
	assert_int_equal(get(t, "a")->value, 1);
	assert_int_equal(get(t, "b")->value, 2);
	assert_null(get(t, "c"));
	del(t, "a");
	assert_null(get(t, "a"));
	assert_int_equal(get(t, "b")->value, 2);
	check_invariants(t, 1);
	shtab_free(t, item_free); /* frees "b" */
}

static void sum(struct shtab_node *n, void *ud)
{
	*(long *)ud += ((struct item *)n)->value;
}

static void test_grow_and_each(void **state)
{
	(void)state;
	enum { N = 5000 };
	struct shtab *t = shtab_new(item_match, 2);
	char key[32];
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		add(t, key, i);
	}
	check_invariants(t, N);
	for (int i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(get(t, key)->value, i);
	}
	long total = 0;
	shtab_each(t, sum, &total);
	assert_int_equal(total, (long)N * (N - 1) / 2);
	for (int i = 0; i < N; i += 2) {
		snprintf(key, sizeof(key), "k%d", i);
		del(t, key);
	}
	check_invariants(t, N / 2);
	shtab_free(t, item_free);
}

struct worker_arg {
	struct shtab *t;
	int id;
};

static void *churn(void *p)
{
	struct worker_arg *a = p;
	char key[32];
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 2000; i++) {
			snprintf(key, sizeof(key), "t%d-%d", a->id, i);
			add(a->t, key, i);
		}
		for (int i = 0; i < 2000; i++) {
			snprintf(key, sizeof(key), "t%d-%d", a->id, i);
			if (!get(a->t, key) || get(a->t, key)->value != i)
				return (void *)1;
			del(a->t, key);
		}
	}
	return NULL;
}

static void test_threads(void **state)
{
	(void)state;
	struct shtab *t = shtab_new(item_match, 16);
	pthread_t th[2];
	struct worker_arg a[2] = { { t, 0 }, { t, 1 } };
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, churn, &a[i]), 0);
	for (int i = 0; i < 2; i++) {
		void *rc;
		pthread_join(th[i], &rc);
		assert_null(rc);
	}
	check_invariants(t, 0);
	shtab_free(t, item_free);
}

int main(void)
{
	if (sodium_init() < 0)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic),
		cmocka_unit_test(test_grow_and_each),
		cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
