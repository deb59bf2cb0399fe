/* tests/unit/test_timer.c - the timer wheel: arm/cancel/re-arm, order,
 * callbacks that arm or cancel timers, timers longer than one turn.
 * Time passes by moving w->start_ms back (one real sleep, ~0.2 s). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <unistd.h>

#include "tether/timer.h"

#define TURN_MS ((uint64_t)TIMER_SLOTS * TIMER_TICK_MS)

/* A timer with bookkeeping; container_of from the embedded timer. */
struct ev {
	struct timer t;
	int id;
	int fired;
	/* What the callback does besides recording. */
	struct ev *cancel;        /* cancel this one */
	struct ev *rearm;         /* re-arm this one (may be itself) */
	uint64_t rearm_ms;
	int rearm_times;          /* how many times to re-arm */
};

static struct timer_wheel *g_wheel;
static int g_log[64];
static int g_nlog;
static int g_armed_in_cb;   /* callbacks entered while their timer was armed */

static void on_fire(struct timer *t)
{
	struct ev *e = (struct ev *)((char *)t - offsetof(struct ev, t));
	e->fired++;
	if (timer_armed(t))
		g_armed_in_cb++;
	if (g_nlog < 64)
		g_log[g_nlog++] = e->id;
	if (e->cancel)
		timer_cancel(&e->cancel->t);
	if (e->rearm && e->rearm_times > 0) {
		e->rearm_times--;
		timer_arm(g_wheel, &e->rearm->t, e->rearm_ms, on_fire);
	}
}

/* Makes <ms> milliseconds pass on <w>'s clock, then runs it. */
static void advance(struct timer_wheel *w, uint64_t ms)
{
	w->start_ms -= ms;
	timer_wheel_run(w);
}

static void ev_init(struct ev *e, int id)
{
	memset(e, 0, sizeof(*e));
	e->id = id;
}

static int setup(void **state)
{
	static struct timer_wheel w;
	timer_wheel_init(&w);
	/* advance() moves start_ms back; uint64 wrap-around is harmless since
	 * the wheel only uses now - start_ms. */
	g_armed_in_cb = 0;
	g_wheel = &w;
	g_nlog = 0;
	*state = &w;
	return 0;
}

/* Every test: a timer is disarmed when its callback runs. */
static int teardown(void **state)
{
	(void)state;
	return g_armed_in_cb ? -1 : 0;
}

static void test_arm_fire_once(void **state)
{
	struct timer_wheel *w = *state;
	struct ev e;
	ev_init(&e, 1);
	assert_false(timer_armed(&e.t));
	timer_wheel_run(w); /* nothing armed: fine */
	timer_arm(w, &e.t, 1000, on_fire);
	assert_true(timer_armed(&e.t));

	advance(w, 900);   /* at most 900 + one tick of real drift: too early */
	assert_int_equal(e.fired, 0);
	assert_true(timer_armed(&e.t));
	advance(w, 200);   /* 1100 ms */
	assert_int_equal(e.fired, 1);
	assert_false(timer_armed(&e.t));
	advance(w, 5000);
	advance(w, TURN_MS);
	assert_int_equal(e.fired, 1);
}

/* 0 ms still waits for the next tick, and never runs inside timer_arm. */
static void test_zero_and_rounding(void **state)
{
	struct timer_wheel *w = *state;
	struct ev z, one;
	ev_init(&z, 1);
	ev_init(&one, 2);
	timer_arm(w, &z.t, 0, on_fire);
	timer_arm(w, &one.t, 1, on_fire);
	assert_int_equal(z.fired, 0);
	advance(w, 2 * TIMER_TICK_MS + TIMER_TICK_MS);
	assert_int_equal(z.fired, 1);
	assert_int_equal(one.fired, 1);
}

static void test_cancel(void **state)
{
	struct timer_wheel *w = *state;
	struct ev e, f;
	ev_init(&e, 1);
	ev_init(&f, 2);
	timer_cancel(&e.t);  /* idle: harmless */
	timer_arm(w, &e.t, 100, on_fire);
	timer_arm(w, &f.t, 100, on_fire);
	timer_cancel(&e.t);
	assert_false(timer_armed(&e.t));
	timer_cancel(&e.t);  /* twice: harmless */
	advance(w, 1000);
	assert_int_equal(e.fired, 0);
	assert_int_equal(f.fired, 1);  /* its slot neighbour was unaffected */

	/* Cancel the head, the middle and the tail of one slot's list. */
	struct ev s[5];
	for (int i = 0; i < 5; i++) {
		ev_init(&s[i], 10 + i);
		timer_arm(w, &s[i].t, 200, on_fire);
	}
	timer_cancel(&s[4].t);
	timer_cancel(&s[2].t);
	timer_cancel(&s[0].t);
	advance(w, 1000);
	for (int i = 0; i < 5; i++)
		assert_int_equal(s[i].fired, (i & 1) ? 1 : 0);
}

static void test_rearm(void **state)
{
	struct timer_wheel *w = *state;
	struct ev e;
	ev_init(&e, 1);
	timer_arm(w, &e.t, 100, on_fire);
	timer_arm(w, &e.t, 2000, on_fire);   /* moved later */
	advance(w, 1000);
	assert_int_equal(e.fired, 0);
	advance(w, 1100);
	assert_int_equal(e.fired, 1);

	timer_arm(w, &e.t, 5000, on_fire);
	timer_arm(w, &e.t, 100, on_fire);    /* moved earlier */
	advance(w, 300);
	assert_int_equal(e.fired, 2);
	advance(w, 10000);
	assert_int_equal(e.fired, 2);        /* not left behind in the old slot */

	/* Re-arming after it fired works like a fresh arm. */
	timer_arm(w, &e.t, 100, on_fire);
	advance(w, 300);
	assert_int_equal(e.fired, 3);
}

static void test_due_order(void **state)
{
	struct timer_wheel *w = *state;
	struct ev e[6];
	static const uint64_t ms[6] = { 3000, 100, 2000, 400, 700, 60000 };
	for (int i = 0; i < 6; i++) {
		ev_init(&e[i], i);
		timer_arm(w, &e[i].t, ms[i], on_fire);
	}
	/* One long stall: everything due runs in one call, in due order. */
	advance(w, 10 * 60 * 1000);
	assert_int_equal(g_nlog, 6);
	static const int order[6] = { 1, 3, 4, 2, 0, 5 };
	for (int i = 0; i < 6; i++) {
		assert_int_equal(g_log[i], order[i]);
		assert_int_equal(e[i].fired, 1);
	}
}

/* Several timers on one tick: each fires exactly once. */
static void test_same_tick(void **state)
{
	struct timer_wheel *w = *state;
	enum { N = 20 };
	struct ev e[N];
	for (int i = 0; i < N; i++) {
		ev_init(&e[i], i);
		timer_arm(w, &e[i].t, 500, on_fire);
	}
	advance(w, 700);
	assert_int_equal(g_nlog, N);
	for (int i = 0; i < N; i++)
		assert_int_equal(e[i].fired, 1);
}

static void test_self_rearm(void **state)
{
	struct timer_wheel *w = *state;
	struct ev e;
	ev_init(&e, 1);
	e.rearm = &e;
	e.rearm_ms = 100;
	e.rearm_times = 3;
	timer_arm(w, &e.t, 100, on_fire);
	/* Each run fires it once: the new deadline is after this run's now. */
	for (int i = 1; i <= 4; i++) {
		advance(w, 1000);
		assert_int_equal(e.fired, i);
		assert_int_equal(timer_armed(&e.t), i < 4);
	}
	advance(w, 1000);
	assert_int_equal(e.fired, 4);

	/* Re-arming itself with 0 ms does not loop inside one run. */
	struct ev z;
	ev_init(&z, 2);
	z.rearm = &z;
	z.rearm_ms = 0;
	z.rearm_times = 1000;
	timer_arm(w, &z.t, 0, on_fire);
	advance(w, 1000);
	assert_int_equal(z.fired, 1);
	advance(w, 1000);
	assert_int_equal(z.fired, 2);
	timer_cancel(&z.t);
	advance(w, 1000);
	assert_int_equal(z.fired, 2);
}

/* A callback cancels a timer due later. */
static void test_cancel_other_later(void **state)
{
	struct timer_wheel *w = *state;
	struct ev a, b;
	ev_init(&a, 1);
	ev_init(&b, 2);
	a.cancel = &b;
	timer_arm(w, &a.t, 100, on_fire);
	timer_arm(w, &b.t, 500, on_fire);
	advance(w, 2000);
	assert_int_equal(a.fired, 1);
	assert_int_equal(b.fired, 0);
	assert_false(timer_armed(&b.t));
}

/* Arms <a> and <b> for <ms> so that they share a due tick (retrying if a
 * tick boundary fell between the two calls). */
static void arm_same_tick(struct timer_wheel *w, struct ev *a, struct ev *b, uint64_t ms)
{
	for (int tries = 0; tries < 100; tries++) {
		timer_arm(w, &a->t, ms, on_fire);
		timer_arm(w, &b->t, ms, on_fire);
		if (a->t.due_tick == b->t.due_tick)
			return;
	}
	fail_msg("could not arm two timers on one tick");
}

/* BUG (server/timer.c timer_wheel_run): the due timers of a tick are first
 * unlinked (timer_cancel sets pprev = NULL) and chained through t->next into
 * a private list. A callback that cancels another timer of the same tick
 * finds it "idle" (pprev == NULL), so timer_cancel() does nothing and the
 * cancelled timer fires anyway. Expected: a timer cancelled before its
 * callback ran does not fire. */
static void test_cancel_other_same_tick(void **state)
{
	struct timer_wheel *w = *state;
	struct ev a, b;
	ev_init(&a, 1);
	ev_init(&b, 2);
	/* Whichever runs first cancels the other: exactly one must fire. */
	a.cancel = &b;
	b.cancel = &a;
	arm_same_tick(w, &a, &b, 200);
	advance(w, 1000);
	assert_int_equal(a.fired + b.fired, 1);
	assert_false(timer_armed(&a.t));
	assert_false(timer_armed(&b.t));
}

/* BUG (server/timer.c timer_wheel_run, same cause as above): a callback that
 * re-arms another timer of the same tick links it into a wheel slot while
 * it is still chained in the private due list; timer_arm() overwrites its
 * ->next, so the rest of the due list is lost (c never fires, yet reads as
 * idle) and b fires now *and* again later. Expected: a and c fire now, b
 * fires once, 1 s later. */
static void test_rearm_other_same_tick(void **state)
{
	struct timer_wheel *w = *state;
	struct ev a, b, c;
	ev_init(&a, 1);
	ev_init(&b, 2);
	ev_init(&c, 3);
	/* Whichever of a/b runs first re-arms the other for 1000 ms. */
	a.rearm = &b;
	b.rearm = &a;
	a.rearm_ms = b.rearm_ms = 1000;
	a.rearm_times = b.rearm_times = 1;
	for (int tries = 0;; tries++) {
		assert_true(tries < 100);
		arm_same_tick(w, &a, &b, 200);
		timer_arm(w, &c.t, 200, on_fire);
		if (c.t.due_tick == a.t.due_tick)
			break;
	}
	advance(w, 500);
	/* Now: the first of a/b fired, the other was moved, c fired. */
	assert_int_equal(a.fired + b.fired, 1);
	assert_int_equal(c.fired, 1);
	struct ev *moved = a.fired ? &b : &a;
	assert_true(timer_armed(&moved->t));
	advance(w, 2000);
	assert_int_equal(moved->fired, 1);
	assert_int_equal(a.fired + b.fired, 2);
	assert_int_equal(c.fired, 1);
}

/* A callback cancelling itself, or a timer that already fired: harmless. */
static void test_cancel_self_and_fired(void **state)
{
	struct timer_wheel *w = *state;
	struct ev a, b;
	ev_init(&a, 1);
	ev_init(&b, 2);
	a.cancel = &a;
	b.cancel = &a;  /* a has fired by then */
	timer_arm(w, &a.t, 100, on_fire);
	timer_arm(w, &b.t, 500, on_fire);
	advance(w, 2000);
	assert_int_equal(a.fired, 1);
	assert_int_equal(b.fired, 1);
}

/* Timers longer than one wheel turn wait for their round. */
static void test_longer_than_a_turn(void **state)
{
	struct timer_wheel *w = *state;
	struct ev one, exact, three, near;
	ev_init(&one, 1);
	ev_init(&exact, 2);
	ev_init(&three, 3);
	ev_init(&near, 4);
	timer_arm(w, &exact.t, TURN_MS, on_fire);              /* lands in the next slot */
	timer_arm(w, &one.t, 60000, on_fire);                  /* 1.17 turns */
	timer_arm(w, &three.t, 3 * TURN_MS + 5000, on_fire);   /* 3.1 turns */
	timer_arm(w, &near.t, 500, on_fire);

	/* Step through in small runs so every slot is visited each turn. */
	uint64_t t = 0;
	while (t < 4 * TURN_MS) {
		advance(w, 1000);
		t += 1000;
		/* A timer must not have fired more than one tick (+drift) early. */
		if (t + 2 * TIMER_TICK_MS < 500)
			assert_int_equal(near.fired, 0);
		if (t + 2 * TIMER_TICK_MS < TURN_MS)
			assert_int_equal(exact.fired, 0);
		if (t + 2 * TIMER_TICK_MS < 60000)
			assert_int_equal(one.fired, 0);
		if (t + 2 * TIMER_TICK_MS < 3 * TURN_MS + 5000)
			assert_int_equal(three.fired, 0);
		/* ... nor late by more than a run. */
		if (t >= 500 + 1000)
			assert_int_equal(near.fired, 1);
		if (t >= TURN_MS + 1000)
			assert_int_equal(exact.fired, 1);
		if (t >= 60000 + 1000)
			assert_int_equal(one.fired, 1);
	}
	assert_int_equal(near.fired, 1);
	assert_int_equal(exact.fired, 1);
	assert_int_equal(one.fired, 1);
	assert_int_equal(three.fired, 1);
	assert_int_equal(g_nlog, 4);
	assert_int_equal(g_log[0], 4);
	assert_int_equal(g_log[1], 2);
	assert_int_equal(g_log[2], 1);
	assert_int_equal(g_log[3], 3);
}

/* One test on the real clock: about 0.2 s of sleep. */
static void test_real_clock(void **state)
{
	struct timer_wheel *w = *state;
	struct ev e, late;
	ev_init(&e, 1);
	ev_init(&late, 2);
	uint64_t t0 = timer_now_ms();
	timer_arm(w, &e.t, 60, on_fire);
	timer_arm(w, &late.t, 10000, on_fire);
	timer_wheel_run(w);
	assert_int_equal(e.fired, 0);
	while (!e.fired && timer_now_ms() - t0 < 500) {
		usleep(10000);
		timer_wheel_run(w);
	}
	assert_int_equal(e.fired, 1);
	uint64_t took = timer_now_ms() - t0;
	assert_true(took >= 60);
	assert_true(took < 500);
	assert_int_equal(late.fired, 0);
	timer_cancel(&late.t);
	/* Monotonic. */
	uint64_t a = timer_now_ms(), b = timer_now_ms();
	assert_true(b >= a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_arm_fire_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zero_and_rounding, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rearm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_due_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_same_tick, setup, teardown),
		cmocka_unit_test_setup_teardown(test_self_rearm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_other_later, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_other_same_tick, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rearm_other_same_tick, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_self_and_fired, setup, teardown),
		cmocka_unit_test_setup_teardown(test_longer_than_a_turn, setup, teardown),
		cmocka_unit_test_setup_teardown(test_real_clock, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
