#!/bin/sh
# scripts/embed.sh FILE SYMBOL - prints a C file defining the bytes of FILE as
# "const char SYMBOL[]" (NUL-terminated) and "const size_t SYMBOL_len".
# Used by the Makefile to put store/redis_lib.lua into the binaries. od and
# sed only (POSIX), so the build needs no xxd.
set -eu
f=$1 sym=$2
printf '/* Generated from %s by scripts/embed.sh: do not edit. */\n' "$f"
printf '#include <stddef.h>\n\n'
printf 'extern const char %s[];\nextern const size_t %s_len;\n\n' "$sym" "$sym"
printf 'const char %s[] = {\n' "$sym"
od -An -v -tx1 "$f" | sed -e 's/  */ /g' -e 's/^ //' -e '/^$/d' -e 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'
printf '0x00 };\n'
printf 'const size_t %s_len = sizeof(%s) - 1;\n' "$sym" "$sym"
