/* tests/fuzz/fuzz_xstream.c - libFuzzer target for xstream_feed and the serializer.
 *
 * The first two bytes choose split points and options, the rest is the
 * stream. It is fed in three pieces (optionally trimming between them);
 * a callback may stop the parse, after which the stream is reset and the
 * rest fed as a new stream, like a STARTTLS/SASL restart. Every stanza is
 * serialized, and the serialization must parse back to the same bytes.
 * Built standalone by `make fuzz`, so it includes the sources it tests. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../server/sbuf.c"
#include "../../server/xnode.c"
#include "../../server/xstream.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
	unsigned stanzas;
	unsigned stop_at;   /* 1-based stanza index whose callback stops; 0 = never */
	bool stop_open, stop_close;
	struct sbuf out, again;
	struct xstream *check;
};

static int rt_stanza(void *ud, struct xnode *el)
{
	struct fz *f = ud;
	f->stanzas++;
	return xnode_serialize(el, XMLNS_CLIENT, &f->again) ? 1 : 0;
}

static const struct xstream_ops rt_ops = { NULL, rt_stanza, NULL };

/* Re-parses <f->out> (one serialized stanza) and compares. */
static void round_trip(struct fz *f)
{
	static const char hdr[] = "<stream:stream xmlns='jabber:client' xmlns:stream='" XMLNS_STREAM "'>";
	struct fz g = { 0 };
	size_t used;
	if (!f->check) {
		struct xstream_limits l = { (size_t)1 << 26, 1000, 0 };
		f->check = xstream_new(&l, &rt_ops, &g);
		if (!f->check)
			abort();
	} else if (xstream_reset(f->check)) {
		abort();
	}
	/* xstream keeps <ud>; point it at this call's g. */
	f->check->ud = &g;
	if (xstream_feed(f->check, hdr, strlen(hdr), &used) != XFEED_OK ||
	    xstream_feed(f->check, f->out.data, f->out.len, &used) != XFEED_OK ||
	    g.stanzas != 1 || g.again.len != f->out.len ||
	    memcmp(g.again.data, f->out.data, f->out.len) != 0)
		abort();
	sbuf_free(&g.again);
}

static int on_open(void *ud, struct xnode *hdr)
{
	struct fz *f = ud;
	(void)xnode_attr(hdr, "to");
	(void)xnode_attr(hdr, "version");
	return f->stop_open;
}

static int on_stanza(void *ud, struct xnode *el)
{
	struct fz *f = ud;
	f->stanzas++;
	for (struct xnode *c = xnode_first_elem(el); c; c = xnode_next_elem(c))
		if (!xnode_text(c))
			abort();
	(void)xnode_child(el, NULL, "body");
	(void)xnode_attr(el, "id");
	if (xnode_set_attr(el, "from", "fuzz@example/r") || xnode_set_attr(el, "from", NULL))
		abort();
	sbuf_reset(&f->out);
	if (xnode_serialize(el, XMLNS_CLIENT, &f->out))
		abort();
	round_trip(f);
	return f->stanzas == f->stop_at;
}

static int on_close(void *ud)
{
	struct fz *f = ud;
	return f->stop_close;
}

static const struct xstream_ops ops = { on_open, on_stanza, on_close };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	const uint8_t a = data[0], b = data[1];
	const char *s = (const char *)data + 2;
	size_t n = size - 2;

	struct fz f = { 0 };
	f.stop_at = b & 7;
	f.stop_open = b & 8;
	f.stop_close = b & 16;
	const bool trim = b & 32;
	struct xstream_limits l = { b & 64 ? 512 : 8192, b & 128 ? 4 : 32, b & 32 ? 600 : 0 };
	struct xstream *xs = xstream_new(&l, &ops, &f);
	if (!xs)
		return 0;

	/* Split points: a fraction of the input each, from <a>'s two nibbles. */
	size_t cut[4] = { 0, n * (a & 15) / 16, 0, n };
	cut[2] = cut[1] + (n - cut[1]) * (a >> 4) / 16;
	int restarts = 0;
	for (int i = 0; i < 3; i++) {
		size_t off = cut[i];
		while (off < cut[i + 1]) {
			size_t used = 0;
			enum xfeed_rc rc = xstream_feed(xs, s + off, cut[i + 1] - off, &used);
			if (rc == XFEED_ERR)
				goto out;
			if (used > cut[i + 1] - off)
				abort();
			off += used;
			if (rc == XFEED_OK)
				break;
			/* Stopped: restart at most a few times, then drop the rest. */
			if (++restarts > 4 || xstream_reset(xs))
				goto out;
		}
		if (trim)
			xstream_trim(xs);
	}
out:
	xstream_free(xs);
	if (f.check)
		xstream_free(f.check);
	sbuf_free(&f.out);
	return 0;
}
