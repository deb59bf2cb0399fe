/* store/memory_sm.h - the memory backend's SM sessions (backend-internal). */
#ifndef TETHER_STORE_MEMORY_SM_H
#define TETHER_STORE_MEMORY_SM_H

#include "tether/store_sm.h"

struct sm_table;

struct sm_table *sm_table_new(void);
void sm_table_free(struct sm_table *t);

int sm_table_create(struct sm_table *t, const struct sm_record *rec, const char *bare,
		    const char *resource);
int sm_table_append(struct sm_table *t, const char *id, uint32_t epoch,
		    const struct sm_entry *e, struct sm_owner *moved_to);
int sm_table_ack(struct sm_table *t, const char *id, uint32_t epoch, uint32_t h);
int sm_table_update(struct sm_table *t, const char *id, uint32_t epoch, const struct sm_record *rec);
int sm_table_take(struct sm_table *t, const char *id, const char *bare, const struct sm_owner *to,
		  uint64_t now_ms, store_sm_take_fn *fn, void *ud);
int sm_table_destroy(struct sm_table *t, const char *id, uint32_t epoch,
		     store_sm_drain_fn *fn, void *ud);
size_t sm_table_queued(struct sm_table *t, const char *id);

#endif /* TETHER_STORE_MEMORY_SM_H */
