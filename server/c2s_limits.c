/* server/c2s_limits.c - the c2s side of the guessing limits: which account an attempt is for.
 *
 * limits.h decides; this file only reads, from a SASL <auth/> or a SASL2
 * <authenticate/>, the account the initial response names, so the
 * per-account bucket can be consulted before any password or token is
 * checked:
 *   PLAIN       authzid NUL authcid NUL password (RFC 4616): the authcid
 *   SCRAM-*     gs2 header, then "n=<saslname>," (RFC 5802; =2C and =3D
 *               unescaped)
 *   HT-*        authcid NUL initiator hash (draft-schmaus-kitten-sasl-ht)
 * Without an initial response (SCRAM with an empty <auth/>), or when the
 * name does not prepare, only the per-address bucket applies. The decoded
 * response may hold a password: it is wiped. */
#include "c2s_priv.h"

#include <stdio.h>
#include <string.h>

#include "tether/jid.h"
#include "tether/limits.h"
#include "tether/sasl.h"
#include "tether/sbuf.h"
#include "tether/timer.h"
#include "tether/xnode.h"

/* Copies the authcid of <mech>'s initial response <ir>/<len> into <out>
 * (NUL-terminated). Returns 0, or -1 if there is none. */
static int authcid_of(const char *mech, const char *ir, size_t len, char *out, size_t outlen)
{
	const char *p = ir, *end = ir + len, *nul;
	size_t n = 0;
	if (!strcmp(mech, "PLAIN")) {
		if (!(nul = memchr(p, 0, len)))
			return -1;
		p = nul + 1;
		const char *e = memchr(p, 0, (size_t)(end - p));
		if (!e)
			return -1;
		n = (size_t)(e - p);
		if (n >= outlen)
			return -1;
		memcpy(out, p, n);
	} else if (!strncmp(mech, "HT-", 3)) {
		if (!(nul = memchr(p, 0, len)))
			return -1;
		n = (size_t)(nul - p);
		if (n >= outlen)
			return -1;
		memcpy(out, p, n);
	} else if (!strncmp(mech, "SCRAM-", 6)) {
		for (int commas = 0; commas < 2; p++) /* skip "cbflag,[a=authzid]," */
			if (p == end)
				return -1;
			else if (*p == ',')
				commas++;
		if (end - p < 2 || p[0] != 'n' || p[1] != '=')
			return -1;
		for (p += 2; p < end && *p != ','; p++) {
			char c = *p;
			if (c == '=' && end - p >= 3 && (!memcmp(p, "=2C", 3) || !memcmp(p, "=3D", 3))) {
				c = p[2] == 'C' ? ',' : '=';
				p += 2;
			}
			if (n + 1 >= outlen)
				return -1;
			out[n++] = c;
		}
	} else {
		return -1;
	}
	out[n] = 0;
	return n && !memchr(out, 0, n) ? 0 : -1;
}

int c2s_auth_refused(struct c2s *s, struct xnode *el)
{
	const char *mech = xnode_attr(el, "mechanism");
	struct xnode *irel = c2s_is(el, XMLNS_SASL2, "authenticate")
				     ? xnode_child(el, XMLNS_SASL2, "initial-response") : el;
	const char *b64 = irel ? xnode_text(irel) : NULL;
	struct sbuf ir = SBUF_INIT;
	char authcid[JID_PART_MAX + 1], user[JID_PART_MAX + 1], bare[2 * JID_PART_MAX + 2];
	const char *account = NULL;
	if (mech && b64 && *b64 && !sasl_b64_decode(b64, strlen(b64), &ir) && ir.data &&
	    !authcid_of(mech, ir.data, ir.len, authcid, sizeof(authcid)) &&
	    !jid_prep_local(authcid, user, sizeof(user))) {
		snprintf(bare, sizeof(bare), "%s@%s", user, s->srv->cfg.domain);
		account = bare;
	}
	sbuf_free_secret(&ir);
	return limits_auth_refused(s->srv->limits, s->tp, s->io, account, timer_now_ms());
}
