/* store/memory_im.h - the memory backend's IM data: rosters and offline messages (backend-internal). */
#ifndef TETHER_STORE_MEMORY_IM_H
#define TETHER_STORE_MEMORY_IM_H

#include <stddef.h>

#include "tether/store_im.h"

struct im_table;

/* Loads every account's IM files from <dir>/im (created if missing).
 * NULL with a message in <err> when a file cannot be read or parsed: a
 * store that would silently forget rosters does not start. */
struct im_table *im_table_open(const char *dir, char *err, size_t errlen);
void im_table_free(struct im_table *t);

/* The store_im.h calls; <contact_exists> for sub is judged by the caller
 * (the users live in memory.c). */
int im_table_read(struct im_table *t, const char *bare, uint64_t *ver, store_im_item_fn *fn,
		  void *ud);
int im_table_set(struct im_table *t, const char *bare, const struct im_item *it,
		 unsigned max_items, struct im_change *out);
int im_table_remove(struct im_table *t, const char *bare, const char *jid, struct im_change *out,
		    struct im_change *contact_out);
int im_table_sub(struct im_table *t, const char *user, const char *contact, int contact_exists,
		 enum sub_type type, const char *stanza, unsigned max_items,
		 struct im_sub_result *out);
int im_table_offline_add(struct im_table *t, const char *bare, const char *data, size_t len,
			 unsigned max);
int im_table_offline_take(struct im_table *t, const char *bare, store_im_msg_fn *fn, void *ud);
int im_table_blocks(struct im_table *t, const char *bare, store_im_jid_fn *fn, void *ud);
int im_table_block(struct im_table *t, const char *bare, enum im_block_op op, char *const *jids,
		   size_t n);

#endif /* TETHER_STORE_MEMORY_IM_H */
