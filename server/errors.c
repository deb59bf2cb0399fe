/* server/errors.c - XMPP stream and stanza error conditions (one list each). */
#include "tether/errors.h"

static const char *const stream_names[] = {
	[SE_NONE] = "undefined-condition",
#define X(e, s) [e] = s,
	STREAM_ERRORS(X)
#undef X
};

static const char *const stanza_names[] = {
	[STE_NONE] = "undefined-condition",
#define X(e, s, t) [e] = s,
	STANZA_ERRORS(X)
#undef X
};

static const char *const stanza_types[] = {
	[STE_NONE] = "cancel",
#define X(e, s, t) [e] = t,
	STANZA_ERRORS(X)
#undef X
};

const char *stream_err_name(enum stream_err e) { return stream_names[e]; }
const char *stanza_err_name(enum stanza_err e) { return stanza_names[e]; }
const char *stanza_err_type(enum stanza_err e) { return stanza_types[e]; }
