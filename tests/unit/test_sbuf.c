/* tests/unit/test_sbuf.c - the growable buffer: appenders, escaping, and
 * the sticky failure flag under a failing allocator (sbuf_fail_hook). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>

#include "tether/sbuf.h"

static int fail_from;   /* allocations from this one on fail; -1: none */
static int nalloc;

static int fail_hook(size_t size)
{
	(void)size;
	return fail_from >= 0 && nalloc++ >= fail_from;
}

static int setup(void **state)
{
	(void)state;
	fail_from = -1;
	nalloc = 0;
	sbuf_fail_hook = fail_hook;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	sbuf_fail_hook = NULL;
	return 0;
}

static void test_appenders(void **state)
{
	(void)state;
	struct sbuf b = SBUF_INIT;
	assert_int_equal(sbuf_puts(&b, "<a x='"), 0);
	assert_int_equal(sbuf_puts_esc(&b, "<&'\">"), 0);
	assert_int_equal(sbuf_printf(&b, "'>%d</a>", 42), 0);
	assert_string_equal(b.data, "<a x='&lt;&amp;&apos;&quot;&gt;'>42</a>");
	assert_false(b.failed);
	sbuf_consume(&b, 3);
	assert_string_equal(b.data, "x='&lt;&amp;&apos;&quot;&gt;'>42</a>");
	sbuf_free(&b);
}

/* One failed append marks the buffer until reset or free, whatever
 * succeeds after it (a smaller append may fit in the old capacity: the
 * buffer then holds text with a hole, which <failed> says). */
static void test_failure_is_sticky(void **state)
{
	(void)state;
	struct sbuf b = SBUF_INIT;
	assert_int_equal(sbuf_puts(&b, "<message>"), 0);  /* 64 bytes */
	fail_from = 0;
	char big[200];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	assert_int_equal(sbuf_puts(&b, big), -ENOMEM);
	assert_true(b.failed);
	assert_string_equal(b.data, "<message>");         /* untouched */
	assert_int_equal(sbuf_puts(&b, "</message>"), 0); /* fits: no allocation */
	assert_true(b.failed);
	assert_int_equal(sbuf_printf(&b, "%s", big), -ENOMEM);
	assert_int_equal(sbuf_puts_esc(&b, big), -ENOMEM);
	assert_true(b.failed);
	sbuf_reset(&b);
	assert_false(b.failed);
	assert_int_equal(b.len, 0);
	assert_int_equal(sbuf_puts(&b, big), -ENOMEM);
	assert_true(b.failed);
	sbuf_free(&b);
	assert_false(b.failed);
	assert_null(b.data);
}

/* sbuf_cat carries the failure of its source: text copied from a buffer
 * with a hole has the hole too. */
static void test_cat_carries_failure(void **state)
{
	(void)state;
	struct sbuf a = SBUF_INIT, b = SBUF_INIT;
	assert_int_equal(sbuf_puts(&a, "<x/>"), 0);
	assert_int_equal(sbuf_cat(&b, &a), 0);
	assert_string_equal(b.data, "<x/>");
	assert_false(b.failed);
	a.failed = 1;
	assert_int_equal(sbuf_cat(&b, &a), -ENOMEM);
	assert_true(b.failed);
	assert_string_equal(b.data, "<x/><x/>");
	sbuf_free(&a);
	sbuf_free(&b);
}

/* Every appender, at every allocation that can fail: returns -ENOMEM,
 * sets <failed>, never writes past its memory (ASan), and the text before
 * the failure is intact. */
static void test_every_allocation_fails(void **state)
{
	(void)state;
	for (int k = 0; k < 8; k++) {
		struct sbuf b = SBUF_INIT;
		fail_from = k;
		nalloc = 0;
		int rc = 0;
		size_t good = 0;
		for (int i = 0; i < 3000 && !rc; i++) {
			good = b.len;
			switch (i % 3) {
			case 0: rc = sbuf_puts(&b, "<body>"); break;
			case 1: rc = sbuf_printf(&b, "%d&", i); break;
			default: rc = sbuf_puts_esc(&b, "a<b"); break;
			}
		}
		assert_int_equal(rc, -ENOMEM);
		assert_true(b.failed);
		assert_true(b.len >= good);
		assert_memory_equal(b.data, "<body>1&a&lt;b", good < 14 ? good : 14);
		sbuf_free(&b);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_appenders, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failure_is_sticky, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cat_carries_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_every_allocation_fails, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
