/* server/log.c - leveled one-line logging to stderr. */
#include "tether/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum log_level log_threshold = LOG_L_INFO;

static const char *const level_name[] = {
	[LOG_L_ERROR] = "error", [LOG_L_WARN] = "warn",
	[LOG_L_INFO] = "info", [LOG_L_DEBUG] = "debug",
};

/* Copies <in> to <out> (NUL-terminated, truncated to <outlen>), writing
 * control characters as \xNN: log arguments carry client-supplied text (a
 * previd, a JID), and a newline in it must not forge a log line. */
static void escape_controls(const char *in, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)in; *p && o + 1 < outlen; p++) {
		if (*p >= 0x20 && *p != 0x7f) {
			out[o++] = (char)*p;
		} else if (o + 4 < outlen) {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[*p >> 4];
			out[o++] = hex[*p & 15];
		} else {
			break;
		}
	}
	out[o] = 0;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld %-5s ", tm.tm_hour,
			 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level_name[lvl]);
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	escape_controls(msg, line + n, sizeof(line) - (size_t)n);
	/* One fputs per line: stderr is unbuffered, lines from threads stay whole. */
	size_t len = strlen(line);
	if (len < sizeof(line) - 1) {
		line[len] = '\n';
		line[len + 1] = 0;
	}
	fputs(line, stderr);
}

int log_level_parse(const char *s, enum log_level *out)
{
	for (unsigned i = 0; i < sizeof(level_name) / sizeof(level_name[0]); i++) {
		if (!strcmp(s, level_name[i])) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}
