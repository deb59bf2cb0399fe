/* server/jid.c - JIDs (RFC 7622): split, prepare each part with libidn, format. */
#include "tether/jid.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <idna.h>
#include <stringprep.h>

/* Preparation may grow a string (case folding, NFKC) or shrink it (mapped
 * to nothing), so the limit is checked on the result. Inputs longer than
 * this cannot prepare to <= JID_PART_MAX octets in any realistic case and
 * are refused up front; the buffer leaves room for growth. */
#define PREP_IN_MAX (4 * JID_PART_MAX)
#define PREP_BUF (4 * JID_PART_MAX + 1)

/* Returns 1 if <s> (<len> bytes) is well-formed UTF-8: no overlong forms,
 * no surrogates, nothing above U+10FFFF. libidn is not trusted to check. */
static int utf8_valid(const unsigned char *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		unsigned c = s[i];
		size_t n;
		uint32_t cp;
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			n = 1; cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2; cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3; cp = c & 0x07;
		} else {
			return 0;
		}
		if (len - i <= n)
			return 0;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += n + 1;
	}
	return 1;
}

static int is_ascii(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] & 0x80)
			return 0;
	return 1;
}

/* Copies the prepared <src> (<len> octets) out, enforcing RFC 7622's
 * 1..1023 octets and the caller's buffer. */
static int put_part(const char *src, size_t len, char *out, size_t outlen)
{
	if (len == 0 || len > JID_PART_MAX || len >= outlen)
		return -EINVAL;
	memcpy(out, src, len);
	out[len] = 0;
	return 0;
}

/* Runs a stringprep profile on a copy of <in> (<len> octets, valid UTF-8)
 * into <buf>. Returns the prepared length, or -EINVAL. */
static int prep_slow(const char *in, size_t len, const Stringprep_profile *profile, char *buf)
{
	if (!utf8_valid((const unsigned char *)in, len))
		return -EINVAL;
	memcpy(buf, in, len);
	buf[len] = 0;
	if (stringprep(buf, PREP_BUF, 0, profile) != STRINGPREP_OK)
		return -EINVAL;
	return (int)strlen(buf);
}

/* Nodeprep (RFC 3920 Appendix A). For pure ASCII the profile reduces to:
 * map A-Z to a-z; refuse controls, space, DEL (C.1.1, C.2.1) and the
 * nodeprep extras " & ' / : < > @. That fast path is exact and avoids
 * libidn's UCS-4 round trip on every stanza; fuzz_jid checks it against
 * libidn. */
int jid_prep_local(const char *in, char *out, size_t outlen)
{
	char buf[PREP_BUF];
	size_t len = strlen(in);
	int n, rc;

	if (len == 0 || len > PREP_IN_MAX)
		return -EINVAL;
	if (is_ascii(in, len)) {
		if (len > JID_PART_MAX || len >= outlen)
			return -EINVAL;
		for (size_t i = 0; i < len; i++) {
			char c = in[i];
			if (c <= 0x20 || c == 0x7f || strchr("\"&'/:<>@", c))
				return -EINVAL;
			out[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
		}
		out[len] = 0;
		return 0;
	}
	n = prep_slow(in, len, stringprep_xmpp_nodeprep, buf);
	rc = n < 0 ? n : put_part(buf, (size_t)n, out, outlen);
	return rc;
}

/* Resourceprep: for ASCII only controls and DEL are refused (C.2.1); case
 * and spaces are kept. */
int jid_prep_resource(const char *in, char *out, size_t outlen)
{
	char buf[PREP_BUF];
	size_t len = strlen(in);
	int n;

	if (len == 0 || len > PREP_IN_MAX)
		return -EINVAL;
	if (is_ascii(in, len)) {
		for (size_t i = 0; i < len; i++)
			if (in[i] < 0x20 || in[i] == 0x7f)
				return -EINVAL;
		return put_part(in, len, out, outlen);
	}
	n = prep_slow(in, len, stringprep_xmpp_resourceprep, buf);
	return n < 0 ? n : put_part(buf, (size_t)n, out, outlen);
}

/* Checks that every label of <s> is 1..63 octets of letters, digits and
 * hyphens, not starting or ending with a hyphen (RFC 1123 / STD3). Returns
 * 1 if so; *<ace> is set if some label carries the "xn--" ACE prefix. */
static int ldh_labels(const char *s, size_t len, int *ace)
{
	size_t start = 0;
	*ace = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && s[i] != '.') {
			char c = s[i];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			      (c >= '0' && c <= '9') || c == '-'))
				return 0;
			continue;
		}
		size_t l = i - start;
		if (l == 0 || l > 63 || s[start] == '-' || s[i - 1] == '-')
			return 0;
		if (l >= 4 && strncasecmp(s + start, "xn--", 4) == 0)
			*ace = 1;
		start = i + 1;
	}
	return 1;
}

/* An IP-literal "[v6]": kept as given, hex digits lowercased. */
static int prep_ip6(const char *in, size_t len, char *out, size_t outlen)
{
	char addr[INET6_ADDRSTRLEN + 1];
	struct in6_addr a;

	if (len < 3 || in[len - 1] != ']' || len - 2 > INET6_ADDRSTRLEN)
		return -EINVAL;
	memcpy(addr, in + 1, len - 2);
	addr[len - 2] = 0;
	if (inet_pton(AF_INET6, addr, &a) != 1)
		return -EINVAL;
	if (put_part(in, len, out, outlen))
		return -EINVAL;
	for (size_t i = 0; i < len; i++)
		if (out[i] >= 'A' && out[i] <= 'F')
			out[i] = (char)(out[i] + 32);
	return 0;
}

/* The general domain path: nameprep per label (which case-folds), every
 * label LDH (STD3) once in ASCII form, A-labels turned into U-labels (RFC 7622
 * §3.2.2). <in> is <len> octets without the trailing dot. */
static int prep_domain_slow(const char *in, size_t len, char *out, size_t outlen)
{
	char buf[PREP_BUF];
	char *ascii = NULL, *uni = NULL;
	int ace, rc = -EINVAL;

	if (len == 0 || len > PREP_IN_MAX || !utf8_valid((const unsigned char *)in, len))
		return -EINVAL;
	memcpy(buf, in, len);
	buf[len] = 0;
	/* Nameprep runs per label inside ToASCII (libidn calls
	 * stringprep_nameprep on each): running it on the whole name would
	 * apply the bidi rule across labels and refuse "<arabic>.com". */
	if (idna_to_ascii_8z(buf, &ascii, IDNA_USE_STD3_ASCII_RULES) != IDNA_SUCCESS)
		goto out;
	if (!ldh_labels(ascii, strlen(ascii), &ace))
		goto out;
	if (!ace) {
		uni = ascii;
		ascii = NULL;
	} else if (idna_to_unicode_8z8z(ascii, &uni, IDNA_USE_STD3_ASCII_RULES) != IDNA_SUCCESS) {
		goto out;
	}
	/* ToUnicode hands back a label it could not decode unchanged: an
	 * "xn--" label left over is not a valid A-label. */
	len = strlen(uni);
	for (size_t i = 0, start = 0; i <= len; i++) {
		if (i < len && uni[i] != '.')
			continue;
		if (i - start >= 4 && strncasecmp(uni + start, "xn--", 4) == 0)
			goto out;
		start = i + 1;
	}
	for (size_t i = 0; i < len; i++)
		if (uni[i] >= 'A' && uni[i] <= 'Z')
			uni[i] = (char)(uni[i] + 32);
	rc = put_part(uni, len, out, outlen);
out:
	free(ascii);
	free(uni);
	return rc;
}

/* Domainpart: strip one trailing dot; IP literals as they are; plain ASCII
 * host names (no ACE label) only need lowercasing and the LDH check, which
 * is exactly what the slow path would do to them (fuzz_jid checks). */
int jid_prep_domain(const char *in, char *out, size_t outlen)
{
	size_t len = strlen(in);
	int ace;

	if (len > 0 && in[len - 1] == '.')
		len--;
	if (len == 0 || len > PREP_IN_MAX)
		return -EINVAL;
	if (in[0] == '[')
		return prep_ip6(in, len, out, outlen);
	if (is_ascii(in, len) && ldh_labels(in, len, &ace) && !ace) {
		if (put_part(in, len, out, outlen))
			return -EINVAL;
		for (size_t i = 0; i < len; i++)
			if (out[i] >= 'A' && out[i] <= 'Z')
				out[i] = (char)(out[i] + 32);
		return 0;
	}
	/* Non-ASCII, ACE labels, or something the fast path refused (which
	 * the slow path refuses as well). */
	return prep_domain_slow(in, len, out, outlen);
}

/* Copies the <len> bytes at <s> into <buf> as a C string; -EINVAL if it
 * cannot be a part (too long, or empty). */
static int cut(const char *s, size_t len, char *buf)
{
	if (len == 0 || len > PREP_IN_MAX)
		return -EINVAL;
	memcpy(buf, s, len);
	buf[len] = 0;
	return 0;
}

/* RFC 7622 §3.1: the first '/' starts the resource (which may itself hold
 * '/' and '@'); before it, the first '@' ends the localpart. A separator
 * with nothing on one side is an error. */
int jid_parse(const char *s, struct jid *out)
{
	char buf[PREP_BUF];
	const char *slash, *at, *dom;
	size_t head;

	out->local[0] = out->domain[0] = out->resource[0] = 0;
	slash = strchr(s, '/');
	head = slash ? (size_t)(slash - s) : strlen(s);
	at = memchr(s, '@', head);
	dom = at ? at + 1 : s;
	if (at && (cut(s, (size_t)(at - s), buf) ||
		   jid_prep_local(buf, out->local, sizeof(out->local))))
		goto fail;
	if (cut(dom, head - (size_t)(dom - s), buf) ||
	    jid_prep_domain(buf, out->domain, sizeof(out->domain)))
		goto fail;
	if (slash && jid_prep_resource(slash + 1, out->resource, sizeof(out->resource)))
		goto fail;
	return 0;
fail:
	out->local[0] = out->domain[0] = out->resource[0] = 0;
	return -EINVAL;
}

int jid_bare(const struct jid *j, char *out, size_t outlen)
{
	/* Once per routed stanza: copies, not snprintf (~900 instructions). */
	size_t nl = strlen(j->local), nd = strlen(j->domain), n = nl + (nl ? 1 : 0) + nd;
	if (n >= outlen) {
		if (outlen) /* as snprintf would leave it: truncated */
			snprintf(out, outlen, nl ? "%s@%s" : "%s%s", j->local, j->domain);
		return -1;
	}
	memcpy(out, j->local, nl);
	if (nl)
		out[nl++] = '@';
	memcpy(out + nl, j->domain, nd + 1);
	return (int)n;
}

int jid_full(const struct jid *j, char *out, size_t outlen)
{
	int n = jid_bare(j, out, outlen);
	if (n < 0 || !j->resource[0])
		return n;
	int m = snprintf(out + n, outlen - (size_t)n, "/%s", j->resource);
	return m < 0 || (size_t)m >= outlen - (size_t)n ? -1 : n + m;
}

int jid_item_covers(const char *item, const char *jid)
{
	size_t full = strlen(jid), bare = strcspn(jid, "/"), l = strlen(item);
	const char *at = memchr(jid, '@', bare);
	const char *dom = at ? at + 1 : jid;
	size_t dlen = (size_t)(jid + bare - dom);
	return (l == full && !memcmp(item, jid, l)) || (l == bare && !memcmp(item, jid, l)) ||
	       (l == dlen && !memcmp(item, dom, l));
}
