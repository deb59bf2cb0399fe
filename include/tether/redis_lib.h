/* include/tether/redis_lib.h - store/redis_lib.lua compiled into the binary (generated at build time). */
#ifndef TETHER_REDIS_LIB_H
#define TETHER_REDIS_LIB_H

#include <stddef.h>

/* The text of store/redis_lib.lua (the FUNCTION library "tether"), made
 * into a C array by the Makefile (scripts/embed.sh), so an installed
 * tetherd or tetherctl loads the library without the source tree.
 * <redis_lib_lua_len> bytes; a NUL follows them. */
extern const char redis_lib_lua[];
extern const size_t redis_lib_lua_len;

#endif /* TETHER_REDIS_LIB_H */
