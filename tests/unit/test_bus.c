/* tests/unit/test_bus.c - where the bus sends a request: this worker (at
 * once), another worker (its inbox), another node (refused).
 *
 * worker_dispatch() and worker_post() are defined here, so the linker
 * takes them instead of server/worker.c: no ring is needed, and what the
 * bus hands each one is recorded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>

#include "tether/bus.h"
#include "tether/errors.h"
#include "tether/rmsg.h"
#include "tether/server.h"
#include "tether/worker.h"

struct call {
	struct worker *on;       /* dispatch: the worker; post: the target */
	struct bus_item it;
};

static struct call dispatched[8], posted[8];
static size_t ndispatched, nposted;

void worker_dispatch(struct worker *w, const struct bus_item *it)
{
	assert_true(ndispatched < 8);
	dispatched[ndispatched++] = (struct call){ .on = w, .it = *it };
}

static int post_err; /* what worker_post fails with (0: it works) */

int worker_post(struct worker *w, struct worker *target, const struct bus_item *it)
{
	(void)w;
	if (post_err)
		return post_err; /* like malloc failing: the item is still the caller's */
	assert_true(nposted < 8);
	posted[nposted++] = (struct call){ .on = target, .it = *it };
	return 0;
}

static struct server srv;
static struct worker wk[3];

static int setup(void **state)
{
	(void)state;
	memset(&srv, 0, sizeof(srv));
	srv.workers = wk;
	srv.nworkers = 3;
	for (unsigned i = 0; i < 3; i++) {
		memset(&wk[i], 0, sizeof(wk[i]));
		wk[i].srv = &srv;
		wk[i].idx = i;
	}
	ndispatched = nposted = 0;
	post_err = 0;
	return 0;
}

/* The protocol's handler for refused deliveries: records and drops. */
static struct rmsg *undelivered[4];
static int undelivered_err[4];
static size_t nundelivered;

static void on_undeliverable(struct worker *w, struct rmsg *m, int err)
{
	(void)w;
	assert_true(nundelivered < 4);
	undelivered[nundelivered] = m;
	undelivered_err[nundelivered++] = err;
	rmsg_unref(m);
}

static const struct worker_handlers handlers = { .undeliverable = on_undeliverable };

static void drop_refs(void)
{
	for (size_t i = 0; i < ndispatched; i++)
		rmsg_unref(dispatched[i].it.msg);
	for (size_t i = 0; i < nposted; i++)
		rmsg_unref(posted[i].it.msg);
}

static struct rmsg *msg(void)
{
	struct rmsg *m = rmsg_new(RMSG_MESSAGE, "<message/>", 10, "a@x/r", "b@x/r", "1", "chat");
	assert_non_null(m);
	return m;
}

static void test_same_worker_at_once(void **state)
{
	(void)state;
	struct bus_addr to = { .node = BUS_NODE_SELF, .worker = 1, .slot = 42, .gen = 9 };
	struct rmsg *m = msg();
	assert_int_equal(bus_deliver(&wk[1], &to, m), 0);
	assert_int_equal(ndispatched, 1);
	assert_int_equal(nposted, 0);
	assert_ptr_equal(dispatched[0].on, &wk[1]);
	assert_int_equal(dispatched[0].it.kind, BUS_DELIVER);
	assert_true(bus_addr_eq(&dispatched[0].it.to, &to));
	assert_ptr_equal(dispatched[0].it.msg, m); /* the reference, passed on */

	assert_int_equal(bus_kick(&wk[1], &to, SE_CONFLICT), 0);
	assert_int_equal(bus_moved(&wk[1], &to), 0);
	assert_int_equal(ndispatched, 3);
	assert_int_equal(dispatched[1].it.kind, BUS_KICK);
	assert_int_equal(dispatched[1].it.cond, SE_CONFLICT);
	assert_null(dispatched[1].it.msg);
	assert_int_equal(dispatched[2].it.kind, BUS_MOVED);
	drop_refs();
}

static void test_other_worker_inbox(void **state)
{
	(void)state;
	struct bus_addr to = { .node = BUS_NODE_SELF, .worker = 2, .slot = 7, .gen = 1 };
	struct rmsg *m = msg();
	assert_int_equal(bus_deliver(&wk[0], &to, m), 0);
	assert_int_equal(bus_kick(&wk[0], &to, SE_SYSTEM_SHUTDOWN), 0);
	assert_int_equal(ndispatched, 0);
	assert_int_equal(nposted, 2);
	assert_ptr_equal(posted[0].on, &wk[2]);
	assert_int_equal(posted[0].it.kind, BUS_DELIVER);
	assert_ptr_equal(posted[0].it.msg, m);
	assert_true(bus_addr_eq(&posted[0].it.to, &to));
	assert_int_equal(posted[1].it.kind, BUS_KICK);
	assert_int_equal(posted[1].it.cond, SE_SYSTEM_SHUTDOWN);
	drop_refs();
}

/* Another node, or a worker that does not exist: refused, and the
 * message reference is dropped (ASan sees a leak otherwise). */
static void test_refused(void **state)
{
	(void)state;
	struct bus_addr other_node = { .node = 3, .worker = 0, .slot = 1, .gen = 1 };
	struct bus_addr no_worker = { .node = BUS_NODE_SELF, .worker = 3, .slot = 1, .gen = 1 };
	assert_int_equal(bus_deliver(&wk[0], &other_node, msg()), -EHOSTUNREACH);
	assert_int_equal(bus_kick(&wk[0], &other_node, SE_CONFLICT), -EHOSTUNREACH);
	assert_int_equal(bus_moved(&wk[0], &other_node), -EHOSTUNREACH);
	assert_int_equal(bus_deliver(&wk[0], &no_worker, msg()), -EINVAL);
	assert_int_equal(ndispatched + nposted, 0);
}

/* No memory for the inbox copy: the message is not lost but handed to
 * the protocol's undeliverable handler (c2s bounces it to its sender);
 * so is one for another node. A kick that fails has nothing to bounce. */
static void test_undeliverable_bounced(void **state)
{
	(void)state;
	struct bus_addr to = { .node = BUS_NODE_SELF, .worker = 2, .slot = 7, .gen = 1 };
	struct bus_addr other_node = { .node = 3, .worker = 0, .slot = 1, .gen = 1 };
	srv.handlers = &handlers;
	nundelivered = 0;
	post_err = -ENOMEM;
	struct rmsg *m = msg();
	assert_int_equal(bus_deliver(&wk[0], &to, m), -ENOMEM);
	assert_int_equal(nundelivered, 1);
	assert_ptr_equal(undelivered[0], m);
	assert_int_equal(undelivered_err[0], -ENOMEM);
	assert_int_equal(bus_kick(&wk[0], &to, SE_CONFLICT), -ENOMEM);
	assert_int_equal(nundelivered, 1);
	m = msg();
	assert_int_equal(bus_deliver(&wk[0], &other_node, m), -EHOSTUNREACH);
	assert_int_equal(nundelivered, 2);
	assert_int_equal(undelivered_err[1], -EHOSTUNREACH);
	assert_int_equal(nposted + ndispatched, 0);
	srv.handlers = NULL;
}

static void test_addr_eq(void **state)
{
	(void)state;
	struct bus_addr a = { .node = 0, .worker = 1, .slot = 2, .gen = 3 }, b = a;
	assert_true(bus_addr_eq(&a, &b));
	b.gen = 4;
	assert_false(bus_addr_eq(&a, &b));
	b = a;
	b.node = 1;
	assert_false(bus_addr_eq(&a, &b));
	b = a;
	b.worker = 0;
	assert_false(bus_addr_eq(&a, &b));
	b = a;
	b.slot = 0;
	assert_false(bus_addr_eq(&a, &b));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_same_worker_at_once, setup),
		cmocka_unit_test_setup(test_other_worker_inbox, setup),
		cmocka_unit_test_setup(test_refused, setup),
		cmocka_unit_test_setup(test_undeliverable_bounced, setup),
		cmocka_unit_test_setup(test_addr_eq, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
