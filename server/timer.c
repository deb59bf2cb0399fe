/* server/timer.c - a per-worker hashed timer wheel (coarse, O(1) arm/cancel). */
#include "tether/timer.h"

#include <string.h>
#include <time.h>

uint64_t timer_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void timer_wheel_init(struct timer_wheel *w)
{
	memset(w, 0, sizeof(*w));
	w->start_ms = timer_now_ms();
}

void timer_cancel(struct timer *t)
{
	if (!t->pprev)
		return;
	*t->pprev = t->next;
	if (t->next)
		t->next->pprev = t->pprev;
	t->next = NULL;
	t->pprev = NULL;
}

static void link_slot(struct timer_wheel *w, struct timer *t)
{
	struct timer **head = &w->slot[t->due_tick % TIMER_SLOTS];
	t->next = *head;
	if (t->next)
		t->next->pprev = &t->next;
	*head = t;
	t->pprev = head;
}

void timer_arm(struct timer_wheel *w, struct timer *t, uint64_t ms, timer_fn *fn)
{
	timer_cancel(t);
	/* Due at least one tick after the current one, so it never fires early. */
	uint64_t now = (timer_now_ms() - w->start_ms) / TIMER_TICK_MS;
	if (now < w->now_tick)
		now = w->now_tick;
	t->due_tick = now + 1 + (ms + TIMER_TICK_MS - 1) / TIMER_TICK_MS;
	t->fn = fn;
	link_slot(w, t);
}

void timer_wheel_run(struct timer_wheel *w)
{
	uint64_t target = (timer_now_ms() - w->start_ms) / TIMER_TICK_MS;
	while (w->now_tick < target) {
		w->now_tick++;
		struct timer **head = &w->slot[w->now_tick % TIMER_SLOTS];
		/* Move the due ones to a local list that is a proper list head:
		 * a callback may then cancel or re-arm any of them safely. */
		struct timer *due = NULL;
		for (struct timer *t = *head, *next; t; t = next) {
			next = t->next;
			if (t->due_tick > w->now_tick)
				continue;
			timer_cancel(t);
			t->next = due;
			if (due)
				due->pprev = &t->next;
			due = t;
			t->pprev = &due;
		}
		while (due) {
			struct timer *t = due;
			timer_cancel(t); /* unlinks from <due>; fires once */
			t->fn(t);
		}
	}
}
