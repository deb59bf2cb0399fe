/* store/memory_sm.h - the memory backend's SM sessions (backend-internal). */
#ifndef TETHER_STORE_MEMORY_SM_H
#define TETHER_STORE_MEMORY_SM_H

#include "tether/store_sm.h"

struct sm_table;

struct sm_table *sm_table_new(void);
void sm_table_free(struct sm_table *t);

int sm_table_create(struct sm_table *t, const struct sm_record *rec, const char *bare,
		    const char *resource);
/* Numbers <e> (e->seq = out + 1) and queues it; epoch 0: not the owner. */
int sm_table_append(struct sm_table *t, const char *id, uint32_t epoch,
		    struct sm_entry *e, struct bus_addr *moved_to);
int sm_table_ack(struct sm_table *t, const char *id, uint32_t epoch, uint32_t h);
int sm_table_update(struct sm_table *t, const char *id, uint32_t epoch, const struct sm_record *rec);
int sm_table_take(struct sm_table *t, const char *id, const char *bare, const struct bus_addr *to,
		  uint64_t now_ms, struct sm_isr_proof *proof, store_sm_take_fn *fn, void *ud);
int sm_table_destroy(struct sm_table *t, const char *id, uint32_t epoch,
		     store_sm_drain_fn *fn, void *ud);
size_t sm_table_queued(struct sm_table *t, const char *id);
int sm_table_set_isr(struct sm_table *t, const char *id, uint32_t epoch, int set, uint8_t mech,
		     const uint8_t sealed[TOKEN_SEALED_LEN]);
/* Copies the record of session <id> if it belongs to <bare>: 0 or -ENOENT;
 * and its sealed ISR token into <sealed> unless NULL (zeroes when it has
 * none). For tests and inspection only: deciding on a peeked record and
 * writing later is the race the take with a proof closes. */
int sm_table_peek(struct sm_table *t, const char *id, const char *bare, struct sm_record *out,
		  uint8_t sealed[TOKEN_SEALED_LEN]);
/* Drops the ISR tokens of every session of <bare>. */
void sm_table_revoke_isr(struct sm_table *t, const char *bare);

/* The session table of a memory store (for tests: sm_table_peek). */
struct store;
struct sm_table *store_memory_sm_table(struct store *st);

/* FAST token slots by (account, user-agent id). */
struct fast_table;
struct fast_table *fast_table_new(void);
void fast_table_free(struct fast_table *t);
int fast_table_get(struct fast_table *t, const char *bare, const char *ua_id, struct fast_slots *out);
int fast_table_cas(struct fast_table *t, const char *bare, const char *ua_id, struct fast_slots *in);
void fast_table_revoke(struct fast_table *t, const char *bare);

#endif /* TETHER_STORE_MEMORY_SM_H */
