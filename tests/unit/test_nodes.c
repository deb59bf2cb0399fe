/* tests/unit/test_nodes.c - node names as numbers (server/nodes.c): self is BUS_NODE_SELF, numbers are stable, concurrent interning agrees. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tether/bus.h"
#include "tether/nodes.h"

static void test_self_and_others(void **state)
{
	(void)state;
	assert_string_equal(nodes_name(BUS_NODE_SELF), "");
	assert_int_equal(nodes_set_self(""), -EINVAL);
	assert_int_equal(nodes_set_self("node-a"), 0);
	assert_int_equal(nodes_set_self("node-a"), 0);     /* the same again: fine */
	assert_int_equal(nodes_set_self("node-z"), -EBUSY); /* renaming: refused */
	assert_int_equal(nodes_intern("node-a"), BUS_NODE_SELF);
	assert_string_equal(nodes_name(BUS_NODE_SELF), "node-a");
	uint16_t b = nodes_intern("node-b"), c = nodes_intern("node-c");
	assert_true(b != BUS_NODE_SELF && c != BUS_NODE_SELF && b != c);
	assert_true(b != NODES_NONE && c != NODES_NONE);
	assert_int_equal(nodes_intern("node-b"), b);
	assert_int_equal(nodes_intern_n("node-bx", 6), b);
	assert_string_equal(nodes_name(b), "node-b");
	assert_null(nodes_name(NODES_NONE - 1));
	assert_int_equal(nodes_intern(""), NODES_NONE);
	char longname[NODES_ID_MAX + 2];
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	assert_int_equal(nodes_intern(longname), NODES_NONE);
	assert_int_equal(nodes_intern_n("a\0b", 3), NODES_NONE);
	/* an incarnation: hex, stable for the process */
	const char *boot = nodes_boot();
	assert_int_equal(strlen(boot), NODES_BOOT_LEN);
	assert_int_equal(strspn(boot, "0123456789abcdef"), NODES_BOOT_LEN);
	assert_ptr_equal(nodes_boot(), boot);
	/* a name that already stands for another node cannot become ours */
	assert_int_equal(nodes_set_self("node-b"), -EBUSY);
}

#define THREADS 4
#define NAMES 200
static uint16_t got[THREADS][NAMES];

static void *intern_all(void *arg)
{
	uint16_t *out = arg;
	for (int i = 0; i < NAMES; i++) {
		char n[16];
		snprintf(n, sizeof(n), "t%d", (i * 7) % NAMES);
		out[(i * 7) % NAMES] = nodes_intern(n);
	}
	return NULL;
}

static void test_concurrent(void **state)
{
	(void)state;
	pthread_t t[THREADS];
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, intern_all, got[i]), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	for (int j = 0; j < NAMES; j++) {
		char n[16];
		snprintf(n, sizeof(n), "t%d", j);
		assert_true(got[0][j] != NODES_NONE);
		for (int i = 1; i < THREADS; i++)
			assert_int_equal(got[i][j], got[0][j]);
		assert_string_equal(nodes_name(got[0][j]), n);
		for (int k = 0; k < j; k++)
			assert_true(got[0][k] != got[0][j]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_self_and_others),
		cmocka_unit_test(test_concurrent),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
