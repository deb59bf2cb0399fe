/* include/tether/shtab.h - a striped hash table: string keys to intrusive nodes, shared by threads. */
#ifndef TETHER_SHTAB_H
#define TETHER_SHTAB_H

#include <stddef.h>
#include <stdint.h>

/* Embed one as the first member of whatever the table holds. */
struct shtab_node {
	struct shtab_node *next;
	uint64_t hash;              /* shtab_hash() of the key; set before insert */
};

/* 1 if <n> is the node of <key>. Called under the stripe's lock. */
typedef int shtab_match_fn(const struct shtab_node *n, const char *key);
typedef void shtab_node_fn(struct shtab_node *n, void *ud);

struct shtab;
struct shtab_stripe;

enum shtab_mode {
	SHTAB_READ = 0,  /* shared: lookups and copies out */
	SHTAB_WRITE,     /* exclusive: insert, remove, change a node */
};

/* A table of SHTAB_STRIPES stripes, each a chained hash table behind its
 * own rwlock, starting with <buckets> buckets (a power of two) and growing
 * at load factor 1. Keys are hashed with SipHash under a random key, so a
 * peer cannot flood one chain. Returns NULL on OOM. */
struct shtab *shtab_new(shtab_match_fn *match, size_t buckets);

/* Calls <node_free>(n, NULL) on every node (may be NULL), then frees the table. */
void shtab_free(struct shtab *t, shtab_node_fn *node_free);

/* A <node_free> for nodes that are one malloc'd block starting with their
 * struct shtab_node: free(n). */
void shtab_node_free(struct shtab_node *n, void *ud);

uint64_t shtab_hash(const struct shtab *t, const char *key);

/* Locks and returns the stripe of <hash>; every find, insert and remove
 * below happens between this and shtab_unlock(). */
struct shtab_stripe *shtab_lock(struct shtab *t, uint64_t hash, enum shtab_mode mode);
void shtab_unlock(struct shtab_stripe *s);

/* The node of <key> (whose hash is <hash>) in locked stripe <s>, or NULL. */
struct shtab_node *shtab_find(struct shtab_stripe *s, uint64_t hash, const char *key);

/* Links <n> (n->hash set) into write-locked stripe <s>; the caller made
 * sure its key is not there yet. May grow the stripe; never fails (without
 * memory to grow, chains get longer). */
void shtab_insert(struct shtab_stripe *s, struct shtab_node *n);

/* Unlinks <n> from write-locked stripe <s>. The caller frees it. */
void shtab_remove(struct shtab_stripe *s, struct shtab_node *n);

/* Calls <fn>(n, <ud>) on every node, one write-locked stripe at a time
 * (<fn> must not remove nodes or call into the table). */
void shtab_each(struct shtab *t, shtab_node_fn *fn, void *ud);

#endif /* TETHER_SHTAB_H */
