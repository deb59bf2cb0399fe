/* include/tether/timer.h - a per-worker hashed timer wheel (coarse, O(1) arm/cancel). */
#ifndef TETHER_TIMER_H
#define TETHER_TIMER_H

#include <stdint.h>

#define TIMER_TICK_MS 50u       /* wheel resolution */
#define TIMER_SLOTS   1024u     /* one turn = 51.2 s; longer timers count rounds */

struct timer;
typedef void timer_fn(struct timer *t);

/* Embed one in the object that owns the deadline; zero-initialised = idle. */
struct timer {
	struct timer *next, **pprev; /* slot list links; pprev NULL = not armed */
	uint64_t due_tick;
	timer_fn *fn;
};

struct timer_wheel {
	struct timer *slot[TIMER_SLOTS];
	uint64_t now_tick;   /* ticks processed so far */
	uint64_t start_ms;   /* monotonic ms at tick 0 */
};

/* Monotonic milliseconds. */
uint64_t timer_now_ms(void);

void timer_wheel_init(struct timer_wheel *w);

/* Arms <t> to call <fn>(t) after <ms> milliseconds (rounded up to a tick).
 * Re-arming an armed timer moves it. */
void timer_arm(struct timer_wheel *w, struct timer *t, uint64_t ms, timer_fn *fn);

/* Disarms <t>; harmless if idle. */
void timer_cancel(struct timer *t);

static inline int timer_armed(const struct timer *t) { return t->pprev != 0; }

/* Runs every timer due up to now. A callback may arm or cancel any timer. */
void timer_wheel_run(struct timer_wheel *w);

#endif /* TETHER_TIMER_H */
