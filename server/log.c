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

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	char line[1024];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld %-5s ", tm.tm_hour,
			 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level_name[lvl]);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
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
