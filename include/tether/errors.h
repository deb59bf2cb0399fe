/* include/tether/errors.h - XMPP stream and stanza error conditions (one list each). */
#ifndef TETHER_ERRORS_H
#define TETHER_ERRORS_H

#define XMLNS_STREAMS "urn:ietf:params:xml:ns:xmpp-streams"
#define XMLNS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

/* RFC 6120 §4.9.3 stream error conditions. */
#define STREAM_ERRORS(X) \
	X(SE_BAD_FORMAT, "bad-format") \
	X(SE_BAD_NAMESPACE_PREFIX, "bad-namespace-prefix") \
	X(SE_CONFLICT, "conflict") \
	X(SE_CONNECTION_TIMEOUT, "connection-timeout") \
	X(SE_HOST_GONE, "host-gone") \
	X(SE_HOST_UNKNOWN, "host-unknown") \
	X(SE_IMPROPER_ADDRESSING, "improper-addressing") \
	X(SE_INTERNAL_SERVER_ERROR, "internal-server-error") \
	X(SE_INVALID_FROM, "invalid-from") \
	X(SE_INVALID_NAMESPACE, "invalid-namespace") \
	X(SE_INVALID_XML, "invalid-xml") \
	X(SE_NOT_AUTHORIZED, "not-authorized") \
	X(SE_NOT_WELL_FORMED, "not-well-formed") \
	X(SE_POLICY_VIOLATION, "policy-violation") \
	X(SE_REMOTE_CONNECTION_FAILED, "remote-connection-failed") \
	X(SE_RESET, "reset") \
	X(SE_RESOURCE_CONSTRAINT, "resource-constraint") \
	X(SE_RESTRICTED_XML, "restricted-xml") \
	X(SE_SEE_OTHER_HOST, "see-other-host") \
	X(SE_SYSTEM_SHUTDOWN, "system-shutdown") \
	X(SE_UNDEFINED_CONDITION, "undefined-condition") \
	X(SE_UNSUPPORTED_ENCODING, "unsupported-encoding") \
	X(SE_UNSUPPORTED_FEATURE, "unsupported-feature") \
	X(SE_UNSUPPORTED_STANZA_TYPE, "unsupported-stanza-type") \
	X(SE_UNSUPPORTED_VERSION, "unsupported-version")

enum stream_err {
	SE_NONE = 0,
#define X(e, s) e,
	STREAM_ERRORS(X)
#undef X
};

/* RFC 6120 §8.3.3 stanza error conditions, with their default error type. */
#define STANZA_ERRORS(X) \
	X(STE_BAD_REQUEST, "bad-request", "modify") \
	X(STE_CONFLICT, "conflict", "cancel") \
	X(STE_FEATURE_NOT_IMPLEMENTED, "feature-not-implemented", "cancel") \
	X(STE_FORBIDDEN, "forbidden", "auth") \
	X(STE_GONE, "gone", "cancel") \
	X(STE_INTERNAL_SERVER_ERROR, "internal-server-error", "cancel") \
	X(STE_ITEM_NOT_FOUND, "item-not-found", "cancel") \
	X(STE_JID_MALFORMED, "jid-malformed", "modify") \
	X(STE_NOT_ACCEPTABLE, "not-acceptable", "modify") \
	X(STE_NOT_ALLOWED, "not-allowed", "cancel") \
	X(STE_NOT_AUTHORIZED, "not-authorized", "auth") \
	X(STE_POLICY_VIOLATION, "policy-violation", "modify") \
	X(STE_RECIPIENT_UNAVAILABLE, "recipient-unavailable", "wait") \
	X(STE_REDIRECT, "redirect", "modify") \
	X(STE_REGISTRATION_REQUIRED, "registration-required", "auth") \
	X(STE_REMOTE_SERVER_NOT_FOUND, "remote-server-not-found", "cancel") \
	X(STE_REMOTE_SERVER_TIMEOUT, "remote-server-timeout", "wait") \
	X(STE_RESOURCE_CONSTRAINT, "resource-constraint", "wait") \
	X(STE_SERVICE_UNAVAILABLE, "service-unavailable", "cancel") \
	X(STE_SUBSCRIPTION_REQUIRED, "subscription-required", "auth") \
	X(STE_UNDEFINED_CONDITION, "undefined-condition", "cancel") \
	X(STE_UNEXPECTED_REQUEST, "unexpected-request", "wait")

enum stanza_err {
	STE_NONE = 0,
#define X(e, s, t) e,
	STANZA_ERRORS(X)
#undef X
};

/* Condition element names and default types. */
const char *stream_err_name(enum stream_err e);
const char *stanza_err_name(enum stanza_err e);
const char *stanza_err_type(enum stanza_err e);

#endif /* TETHER_ERRORS_H */
