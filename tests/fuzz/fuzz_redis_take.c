/* tests/fuzz/fuzz_redis_take.c - libFuzzer target for the Redis backend's reply codec (store/redis_codec.c): take/destroy replies, records, owners, queue entries, FAST slots, users.
 * Standalone:
 *   clang -Iinclude -isystem /usr/include/android -std=gnu11 -D_GNU_SOURCE -g -O1 \
 *     -fsanitize=fuzzer,address,undefined tests/fuzz/fuzz_redis_take.c -lhiredis -lsodium -lpthread
 * Input: RESP2 bytes, decoded by rproto (redis_proto.c, with its reply
 * size limit, as on a worker) as the replies of 16 commands; every reply
 * goes through every decoder.
 * Checks: no crash or leak; a take reply that decodes gives a record whose
 * id is the one asked for and a queue with one reference per entry; an
 * entry that decodes encodes back (meta + payload) to bytes that decode to
 * the same message; an owner that parses formats back to a string that
 * parses to the same address. */
#include "../../server/nodes.c"
#include "../../server/rmsg.c"
#include "../../store/redis_codec.c"
#include "../../store/redis_proto.c"

#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_entry(const char *s, size_t len)
{
	struct sm_entry e, back;
	if (rcodec_entry(s, len, &e))
		return;
	const struct rmsg *m = e.msg;
	char head[48], meta[4096];
	size_t ml = rcodec_meta(m, meta, sizeof(meta));
	if (ml <= sizeof(meta)) {
		int hl = snprintf(head, sizeof(head), "%u:%llu:", e.seq, (unsigned long long)e.stamp_ms);
		size_t n = (size_t)hl + ml + m->len;
		char *buf = malloc(n);
		if (buf) {
			memcpy(buf, head, (size_t)hl);
			memcpy(buf + hl, meta, ml);
			memcpy(buf + (size_t)hl + ml, m->data, m->len);
			if (rcodec_entry(buf, n, &back))
				abort();
			if (back.seq != e.seq || back.stamp_ms != e.stamp_ms ||
			    back.msg->kind != m->kind || back.msg->len != m->len ||
			    memcmp(back.msg->data, m->data, m->len) || strcmp(back.msg->from, m->from) ||
			    strcmp(back.msg->to, m->to) || strcmp(back.msg->id, m->id) ||
			    strcmp(back.msg->type, m->type))
				abort();
			rmsg_unref(back.msg);
			free(buf);
		}
	}
	rmsg_unref(e.msg);
}

static void check_owner(const char *s, size_t len)
{
	struct bus_addr a, b;
	char out[RCODEC_OWNER_MAX];
	if (rcodec_owner_parse(s, len, &a))
		return;
	if (rcodec_owner_fmt(&a, out, sizeof(out)) < 0)
		return; /* BUS_NODE_SELF without a name set: not formattable */
	if (rcodec_owner_parse(out, strlen(out), &b) || !bus_addr_eq(&a, &b))
		abort();
}

static void walk(const redisReply *r, int depth)
{
	if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_ERROR ||
	    r->type == REDIS_REPLY_STATUS) {
		check_entry(r->str, r->len);
		check_owner(r->str, r->len);
		struct bus_addr a;
		rcodec_stale_owner(r->str, r->len, &a);
		(void)rcodec_errno(r->str, r->len);
		(void)rcodec_nofunc(r->str, r->len);
		struct fast_slots fs = { 0 };
		if (!rcodec_fast_unpack(r->str, r->len, &fs)) {
			uint8_t blob[RCODEC_FAST_LEN];
			rcodec_fast_pack(&fs, blob);
			struct fast_slots again = { 0 };
			if (rcodec_fast_unpack((const char *)blob, sizeof(blob), &again) ||
			    memcmp(&fs.fresh, &again.fresh, sizeof(fs.fresh)) ||
			    memcmp(&fs.current, &again.current, sizeof(fs.current)))
				abort();
		}
	}
	if (r->type != REDIS_REPLY_ARRAY || depth > 3)
		return;
	struct sm_record rec;
	char res[64];
	struct sm_entry *q;
	size_t n;
	(void)rcodec_record(r, "S", &rec, res, sizeof(res));
	for (int want = 0; want < 2; want++) {
		if (!rcodec_taken(r, "S", &rec, res, sizeof(res), want, &q, &n)) {
			if (strcmp(rec.id, "S") || (n && !q) || (!want && n))
				abort();
			for (size_t i = 0; i < n; i++)
				rmsg_unref(q[i].msg);
			free(q);
		} else if (q || n) {
			abort(); /* a failed decode leaves nothing allocated */
		}
	}
	struct user_creds c;
	(void)rcodec_creds(r, &c);
	for (size_t i = 0; i < r->elements && i < 64; i++)
		walk(r->element[i], depth + 1);
}

static void on_reply(const redisReply *r, const char *err, void *ud)
{
	(void)err, (void)ud;
	if (r)
		walk(r, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int once;
	if (!once) {
		once = 1;
		nodes_set_self("self");
	}
	struct rproto_limits lim = { .max_reply = 64u << 10 };
	struct rproto *rp = rproto_new(&lim);
	if (!rp)
		return 0;
	const char *argv[] = { "X" };
	size_t lens[] = { 1 };
	for (int i = 0; i < 16; i++)
		rproto_command(rp, 1, argv, lens, on_reply, NULL, 0, NULL);
	rproto_feed(rp, (const char *)data, size);
	rproto_free(rp);
	return 0;
}
