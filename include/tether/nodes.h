/* include/tether/nodes.h - cluster node names as small numbers (struct bus_addr's node field). */
#ifndef TETHER_NODES_H
#define TETHER_NODES_H

#include <stddef.h>
#include <stdint.h>

/* A bus address names its node with a uint16_t; the store (Redis) names it
 * with the [cluster] node string. This table maps one to the other, for
 * the life of the process: a name, once interned, keeps its number, so an
 * address read back from the store compares equal (bus_addr_eq) to the
 * same address made locally. Our own name is BUS_NODE_SELF (bus.h).
 * Thread-safe: lookups of known names take no lock. */

#define NODES_MAX 4096          /* distinct names a process can hold; beyond: NODES_NONE */
#define NODES_NONE UINT16_MAX   /* no number: unknown, invalid, or the table is full */
#define NODES_NAME_MAX 64       /* bytes of a node's name (config.h CONFIG_NODE_MAX) */
#define NODES_BOOT_LEN 8        /* hex digits of an incarnation (nodes_boot) */
#define NODES_ID_MAX (NODES_NAME_MAX + 1 + NODES_BOOT_LEN) /* bytes nodes_intern() takes */

/* Sets this node's name (from [cluster] node). Call once, before any
 * worker starts. <name> is copied; at most NODES_NAME_MAX bytes. Returns
 * 0, or -EINVAL for an empty or too long name, -EBUSY if another name was
 * set already. */
int nodes_set_self(const char *name);

/* This process's incarnation: NODES_BOOT_LEN random hex digits, the same
 * for the life of the process. A node that restarts keeps its name and
 * gets a new incarnation, so an address its previous run left in a store
 * (struct bus_addr restarts its slots and generations) can be told from a
 * live one (store/redis_codec.c writes owners as "<name>.<boot>/..."). */
const char *nodes_boot(void);

/* The number of node <name>: BUS_NODE_SELF for ours, the same number for
 * the same name on every call. Any string of 1..NODES_ID_MAX bytes
 * without NUL can be interned (an incarnation "name.boot" too).
 * NODES_NONE for an empty or too long name, or when NODES_MAX names are
 * held. */
uint16_t nodes_intern(const char *name);

/* As nodes_intern() for the <len> bytes of <name> (not NUL-terminated). */
uint16_t nodes_intern_n(const char *name, size_t len);

/* The name of node number <id>, or NULL if none has it. BUS_NODE_SELF
 * before nodes_set_self(): "". The string lives as long as the process. */
const char *nodes_name(uint16_t id);

#endif /* TETHER_NODES_H */
