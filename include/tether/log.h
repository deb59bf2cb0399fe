/* include/tether/log.h - leveled one-line logging to stderr. */
#ifndef TETHER_LOG_H
#define TETHER_LOG_H

enum log_level {
	LOG_L_ERROR = 0, /* the process or a subsystem cannot go on */
	LOG_L_WARN,      /* something is wrong but handled */
	LOG_L_INFO,      /* lifecycle events: start, stop, logins */
	LOG_L_DEBUG,     /* per-stanza detail, development only */
};

extern enum log_level log_threshold;

/* Prints one line "LEVEL [who] message" to stderr if <lvl> passes the
 * threshold. Never pass secrets (passwords, SASL payloads, tokens). */
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_enabled(lvl) ((lvl) <= log_threshold)
#define log_error(...) log_msg(LOG_L_ERROR, __VA_ARGS__)
#define log_warn(...)  do { if (log_enabled(LOG_L_WARN)) log_msg(LOG_L_WARN, __VA_ARGS__); } while (0)
#define log_info(...)  do { if (log_enabled(LOG_L_INFO)) log_msg(LOG_L_INFO, __VA_ARGS__); } while (0)
#define log_debug(...) do { if (log_enabled(LOG_L_DEBUG)) log_msg(LOG_L_DEBUG, __VA_ARGS__); } while (0)

/* Parses "error|warn|info|debug". Returns 0, or -1 if unknown. */
int log_level_parse(const char *s, enum log_level *out);

#endif /* TETHER_LOG_H */
