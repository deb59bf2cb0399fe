/* tests/unit/test_jid.c - JID parsing and preparation (RFC 7622 via libidn). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tether/jid.h"

/* Parses <in>, expecting success and the three parts. */
static void parse_ok(const char *in, const char *local, const char *domain, const char *res)
{
	struct jid j;
	int rc = jid_parse(in, &j);
	if (rc)
		print_error("jid_parse(\"%s\") failed\n", in);
	assert_int_equal(rc, 0);
	assert_string_equal(j.local, local);
	assert_string_equal(j.domain, domain);
	assert_string_equal(j.resource, res);
}

static void parse_bad(const char *in)
{
	struct jid j;
	int rc = jid_parse(in, &j);
	if (rc != -EINVAL)
		print_error("jid_parse(\"%s\") accepted: %s@%s/%s\n", in, j.local, j.domain, j.resource);
	assert_int_equal(rc, -EINVAL);
	assert_string_equal(j.local, "");
	assert_string_equal(j.domain, "");
	assert_string_equal(j.resource, "");
}

static void test_split(void **state)
{
	(void)state;
	parse_ok("example.com", "", "example.com", "");
	parse_ok("user@example.com", "user", "example.com", "");
	parse_ok("user@example.com/res", "user", "example.com", "res");
	parse_ok("example.com/res", "", "example.com", "res");
	/* the resource starts at the first '/' and may hold '/' and '@' */
	parse_ok("user@example.com/a/b@c", "user", "example.com", "a/b@c");
	parse_ok("example.com/u@x", "", "example.com", "u@x");
	parse_ok("localhost", "", "localhost", "");
	parse_ok("127.0.0.1", "", "127.0.0.1", "");
	parse_ok("u@[::1]/r", "u", "[::1]", "r");
	parse_ok("u@[2001:DB8::1]", "u", "[2001:db8::1]", "");
}

static void test_empty_parts(void **state)
{
	(void)state;
	parse_bad("");
	parse_bad("@example.com");
	parse_bad("user@");
	parse_bad("user@/res");
	parse_bad("example.com/");
	parse_bad("user@example.com/");
	parse_bad("/res");
	parse_bad("@");
	parse_bad(".");
	parse_bad("a..b");
	parse_bad(".example.com");
	parse_bad("u@@example.com"); /* second '@' lands in the domain */
}

static void test_case(void **state)
{
	(void)state;
	/* local and domain fold, resource keeps its case */
	parse_ok("JuLiEt@ExAmPlE.CoM/BalCony", "juliet", "example.com", "BalCony");
	/* non-ASCII folding through libidn */
	parse_ok("\xC3\x84LICE@example.com", "\xC3\xA4lice", "example.com", "");   /* Ä → ä */
	parse_ok("\xCE\xA3@example.com", "\xCF\x83", "example.com", "");           /* Σ → σ */
}

static void test_nodeprep_forbidden(void **state)
{
	(void)state;
	const char *bad = "\"&'/:<>@ ";
	char buf[64], out[64];
	for (const char *p = bad; *p; p++) {
		snprintf(buf, sizeof(buf), "ab%ccd", *p);
		assert_int_equal(jid_prep_local(buf, out, sizeof(out)), -EINVAL);
		/* also through libidn: one non-ASCII char forces the slow path */
		snprintf(buf, sizeof(buf), "\xC3\xA9%ccd", *p);
		assert_int_equal(jid_prep_local(buf, out, sizeof(out)), -EINVAL);
	}
	parse_bad("a\"b@example.com");
	parse_bad("a&b@example.com");
	parse_bad("a'b@example.com");
	parse_bad("a:b@example.com");
	parse_bad("a<b@example.com");
	parse_bad("a>b@example.com");
	parse_bad("a b@example.com");
	parse_bad("a\tb@example.com");
	parse_bad("a\x7f" "b@example.com");
	/* ',' '=' and '.' are fine in a localpart */
	parse_ok("a,b=c.d@example.com", "a,b=c.d", "example.com", "");
	/* a localpart that prepares to nothing (soft hyphen is mapped away) */
	assert_int_equal(jid_prep_local("\xC2\xAD", out, sizeof(out)), -EINVAL);
}

static void test_resourceprep(void **state)
{
	(void)state;
	char out[64];
	parse_ok("u@example.com/My Phone", "u", "example.com", "My Phone");
	parse_ok("u@example.com/ Lead & Trail ", "u", "example.com", " Lead & Trail ");
	parse_ok("u@example.com/\"<>:'", "u", "example.com", "\"<>:'");
	assert_int_equal(jid_prep_resource("CaSe \xC3\x84", out, sizeof(out)), 0);
	assert_string_equal(out, "CaSe \xC3\x84");
	assert_int_equal(jid_prep_resource("a\x01" "b", out, sizeof(out)), -EINVAL);
	assert_int_equal(jid_prep_resource("a\x7f", out, sizeof(out)), -EINVAL);
	/* a non-ASCII space (U+3000) becomes U+0020 (NFKC runs before the
	 * C.1.2 check), as RFC 7622 wants */
	assert_int_equal(jid_prep_resource("a\xE3\x80\x80" "b", out, sizeof(out)), 0);
	assert_string_equal(out, "a b");
	/* private use (C.3) is prohibited */
	assert_int_equal(jid_prep_resource("a\xEE\x80\x80", out, sizeof(out)), -EINVAL);
}

static void test_bad_utf8(void **state)
{
	(void)state;
	char out[64];
	assert_int_equal(jid_prep_local("a\xC3", out, sizeof(out)), -EINVAL);       /* truncated */
	assert_int_equal(jid_prep_local("\xC0\xAF", out, sizeof(out)), -EINVAL);    /* overlong */
	assert_int_equal(jid_prep_local("\xED\xA0\x80", out, sizeof(out)), -EINVAL); /* surrogate */
	assert_int_equal(jid_prep_local("\xF4\x90\x80\x80", out, sizeof(out)), -EINVAL); /* > U+10FFFF */
	assert_int_equal(jid_prep_resource("\xFF", out, sizeof(out)), -EINVAL);
	assert_int_equal(jid_prep_domain("\xE9xample.com", out, sizeof(out)), -EINVAL);
}

/* Fills <buf> with <n> copies of <ch> and a NUL. */
static char *rep(char *buf, char ch, size_t n)
{
	memset(buf, ch, n);
	buf[n] = 0;
	return buf;
}

static void test_lengths(void **state)
{
	(void)state;
	static char part[JID_PART_MAX + 64], in[JID_MAX + 64];
	static struct jid j;

	/* localpart and resourcepart: 1023 octets ok, 1024 refused */
	snprintf(in, sizeof(in), "%s@example.com", rep(part, 'a', 1023));
	assert_int_equal(jid_parse(in, &j), 0);
	assert_int_equal(strlen(j.local), 1023);
	snprintf(in, sizeof(in), "%s@example.com", rep(part, 'a', 1024));
	assert_int_equal(jid_parse(in, &j), -EINVAL);
	snprintf(in, sizeof(in), "u@example.com/%s", rep(part, 'R', 1023));
	assert_int_equal(jid_parse(in, &j), 0);
	assert_int_equal(strlen(j.resource), 1023);
	snprintf(in, sizeof(in), "u@example.com/%s", rep(part, 'R', 1024));
	assert_int_equal(jid_parse(in, &j), -EINVAL);
	/* counted after preparation, in octets: 512 × "é" = 1024 octets */
	part[0] = 0;
	for (int i = 0; i < 512; i++)
		strcat(part, "\xC3\x89");
	snprintf(in, sizeof(in), "%s@example.com", part);
	assert_int_equal(jid_parse(in, &j), -EINVAL);
	part[strlen(part) - 2] = 0; /* 1022 octets */
	snprintf(in, sizeof(in), "%s@example.com", part);
	assert_int_equal(jid_parse(in, &j), 0);
	assert_int_equal(strlen(j.local), 1022);

	/* domain: 16 labels of 63 = 1023 octets ok; one more octet refused */
	in[0] = 0;
	for (int i = 0; i < 16; i++) {
		strcat(in, rep(part, 'a' + i, 63));
		if (i < 15)
			strcat(in, ".");
	}
	assert_int_equal(strlen(in), 1023);
	assert_int_equal(jid_parse(in, &j), 0);
	strcat(in, "."); /* the trailing dot is stripped: still fine */
	assert_int_equal(jid_parse(in, &j), 0);
	assert_int_equal(strlen(j.domain), 1023);
	in[strlen(in) - 1] = 0;
	strcat(in, ".b");
	assert_int_equal(jid_parse(in, &j), -EINVAL);
	/* a label over 63 octets */
	snprintf(in, sizeof(in), "%s.com", rep(part, 'x', 64));
	assert_int_equal(jid_parse(in, &j), -EINVAL);
	/* the caller's buffer is respected */
	char small[4];
	assert_int_equal(jid_prep_local("abcd", small, sizeof(small)), -EINVAL);
	assert_int_equal(jid_prep_local("abc", small, sizeof(small)), 0);
}

static void test_domain(void **state)
{
	(void)state;
	char out[256];
	parse_ok("u@example.com.", "u", "example.com", "");   /* trailing dot stripped */
	parse_bad("u@example.com..");
	parse_bad("u@-example.com");
	parse_bad("u@example-.com");
	parse_bad("u@exa_mple.com");
	parse_bad("u@exa mple.com");
	parse_bad("u@[::1");
	parse_bad("u@[not-v6]");
	/* IDN: U-labels are nameprep'd, A-labels become U-labels */
	parse_ok("u@B\xC3\x9C" "CHER.example", "u", "b\xC3\xBC" "cher.example", "");
	parse_ok("u@xn--bcher-kva.example", "u", "b\xC3\xBC" "cher.example", "");
	parse_ok("u@XN--BCHER-KVA.Example.", "u", "b\xC3\xBC" "cher.example", "");
	parse_bad("u@xn--zz.example"); /* not a valid A-label */
	/* ideographic full stop separates labels */
	assert_int_equal(jid_prep_domain("b\xC3\xBC" "cher\xE3\x80\x82" "example", out, sizeof(out)), 0);
	assert_string_equal(out, "b\xC3\xBC" "cher.example");
}

static void test_format(void **state)
{
	(void)state;
	struct jid j;
	char buf[64];
	assert_int_equal(jid_parse("User@Example.com/Res", &j), 0);
	assert_int_equal(jid_bare(&j, buf, sizeof(buf)), (int)strlen("user@example.com"));
	assert_string_equal(buf, "user@example.com");
	assert_int_equal(jid_full(&j, buf, sizeof(buf)), (int)strlen("user@example.com/Res"));
	assert_string_equal(buf, "user@example.com/Res");
	assert_int_equal(jid_full(&j, buf, 20), -1); /* needs 21 */
	assert_int_equal(jid_full(&j, buf, 21), 20);
	assert_int_equal(jid_bare(&j, buf, 16), -1);
	assert_int_equal(jid_parse("example.com/r", &j), 0);
	assert_int_equal(jid_bare(&j, buf, sizeof(buf)), 11);
	assert_string_equal(buf, "example.com");
	assert_int_equal(jid_full(&j, buf, sizeof(buf)), 13);
	assert_string_equal(buf, "example.com/r");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_split),
		cmocka_unit_test(test_empty_parts),
		cmocka_unit_test(test_case),
		cmocka_unit_test(test_nodeprep_forbidden),
		cmocka_unit_test(test_resourceprep),
		cmocka_unit_test(test_bad_utf8),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_domain),
		cmocka_unit_test(test_format),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
