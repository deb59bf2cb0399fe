/* server/sm.c - XEP-0198 stream management: counters, ids, wire helpers (sans-I/O). */
#include "tether/sm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "tether/sbuf.h"

int sm_check_h(const struct sm_counters *c, uint32_t h)
{
	/* Both differences are mod 2^32, so the check survives the wrap. */
	return (uint32_t)(h - c->acked) > (uint32_t)(c->out - c->acked) ? -ERANGE : 0;
}

int sm_parse_bool(const char *s)
{
	if (!s)
		return -1;
	if (!strcmp(s, "true") || !strcmp(s, "1"))
		return 1;
	if (!strcmp(s, "false") || !strcmp(s, "0"))
		return 0;
	return -1;
}

int sm_parse_u32(const char *s, uint32_t *out)
{
	if (!s || *s < '0' || *s > '9')
		return -1;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v > UINT32_MAX)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

void sm_new_id(char out[SM_ID_LEN + 1])
{
	unsigned char raw[16];
	randombytes_buf(raw, sizeof(raw));
	sodium_bin2base64(out, SM_ID_LEN + 1, raw, sizeof(raw),
			  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

unsigned sm_grant_max(const char *requested, unsigned cap)
{
	uint32_t want;
	if (!requested || sm_parse_u32(requested, &want) || want == 0 || want > cap)
		return cap;
	return want;
}

void sm_format_stamp(uint64_t stamp_ms, char out[32])
{
	time_t t = (time_t)(stamp_ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 32 - n, ".%03uZ", (unsigned)(stamp_ms % 1000));
}

uint64_t sm_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int sm_add_delay(const char *stanza, size_t len, const char *domain, uint64_t stamp_ms,
		 struct sbuf *out)
{
	char stamp[32];
	if (len < 4 || stanza[0] != '<' || stanza[len - 1] != '>')
		return -EINVAL;
	/* The element name: up to the first space, '/' or '>'. */
	size_t nlen = strcspn(stanza + 1, " \t\r\n/>");
	if (!nlen || nlen + 1 >= len)
		return -EINVAL;
	sm_format_stamp(stamp_ms, stamp);
	int rc;
	if (stanza[len - 2] == '/') {
		/* <x .../>  →  <x ...><delay/></x> */
		rc = sbuf_append(out, stanza, len - 2);
		rc |= sbuf_puts(out, ">");
	} else {
		/* <x ...>...</x>: insert before the closing tag. */
		size_t close = nlen + 3; /* "</" name ">" */
		if (close > len || memcmp(stanza + len - close, "</", 2) ||
		    memcmp(stanza + len - close + 2, stanza + 1, nlen))
			return -EINVAL;
		rc = sbuf_append(out, stanza, len - close);
	}
	rc |= sbuf_puts(out, "<delay xmlns='" XMLNS_DELAY "' from='");
	rc |= sbuf_puts_esc(out, domain);
	rc |= sbuf_printf(out, "' stamp='%s'/></", stamp);
	rc |= sbuf_append(out, stanza + 1, nlen);
	rc |= sbuf_puts(out, ">");
	return rc ? -ENOMEM : 0;
}
