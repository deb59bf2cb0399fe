/* tests/fuzz/fuzz_redis_proto.c - libFuzzer target for the reply path of rproto (redis_proto.c).
 * Standalone:
 *   clang -Iinclude -std=gnu11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
 *     tests/fuzz/fuzz_redis_proto.c -lhiredis
 * Input: a 4-byte header, then the bytes fed as replies.
 *   byte 0: bits 0-3: commands pending (1..16); bit 4: small limits (a
 *           256-byte reply limit); bit 5: each callback cancels the next
 *           command; bit 6: expire halfway; bit 7: reset halfway
 *   bytes 1-2: which commands are cancelled before any byte arrives
 *   byte 3: feed chunk size (1..256)
 * Checks: no crash or leak; a cancelled command's callback never runs; every
 * other callback runs exactly once, in issue order; <err> and <reply> agree
 * (NULL err: a non-error reply; rproto_err_reply: an error reply; any other
 * err: no reply); the reply can be walked. */
#include "../../store/redis_proto.c"

#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NCMD 16

struct fcmd {
	struct rproto *rp;
	int idx, calls, cancelled;
	uint64_t handle;
	struct fcmd *next;  /* cancelled by this one's callback, if set */
};

static int last_called;

static size_t walk(const redisReply *r)
{
	size_t n = r->len;
	if (r->str && r->len)
		n += (unsigned char)r->str[0] + (unsigned char)r->str[r->len - 1];
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
		n += walk(r->element[i]);
	return n;
}

static void on_reply(const redisReply *reply, const char *err, void *ud)
{
	struct fcmd *c = ud;
	if (c->cancelled || c->calls)
		abort(); /* a cancelled callback ran, or one ran twice */
	if (c->idx <= last_called)
		abort(); /* out of order */
	last_called = c->idx;
	c->calls++;
	if (!err && (!reply || reply->type == REDIS_REPLY_ERROR))
		abort();
	if (err == rproto_err_reply && (!reply || reply->type != REDIS_REPLY_ERROR))
		abort();
	if (err && err != rproto_err_reply && reply)
		abort();
	if (reply)
		(void)walk(reply);
	if (c->next && !c->next->cancelled && !c->next->calls) {
		if (rproto_cancel(c->rp, c->next->handle))
			abort();
		c->next->cancelled = 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fcmd cmd[NCMD];
	struct rproto_limits lim = { 0 };
	const char *argv[] = { "GET", "k" };
	size_t lens[] = { 3, 1 };

	if (size < 4)
		return 0;
	int n = (data[0] & 15) + 1;
	unsigned cancel = data[1] | (unsigned)data[2] << 8;
	size_t chunk = (size_t)data[3] + 1;
	if (data[0] & 0x10)
		lim.max_reply = 256;
	struct rproto *rp = rproto_new(&lim);
	if (!rp)
		return 0;
	last_called = -1;
	memset(cmd, 0, sizeof(cmd));
	for (int i = 0; i < n; i++) {
		cmd[i].rp = rp;
		cmd[i].idx = i;
		if ((data[0] & 0x20) && i + 1 < n)
			cmd[i].next = &cmd[i + 1];
		if (rproto_command(rp, 2, argv, lens, on_reply, &cmd[i], 1000 + (uint64_t)i, &cmd[i].handle))
			abort();
	}
	for (int i = 0; i < n; i++)
		if (cancel & (1u << i)) {
			if (rproto_cancel(rp, cmd[i].handle))
				abort();
			cmd[i].cancelled = 1;
		}
	/* Everything encoded was "sent". */
	size_t len;
	while (rproto_out(rp, &len))
		rproto_consumed(rp, len);

	const uint8_t *p = data + 4;
	size_t left = size - 4, half = left / 2, done = 0;
	while (left) {
		size_t k = left < chunk ? left : chunk;
		rproto_feed(rp, (const char *)p, k);
		p += k;
		left -= k;
		if (done < half && done + k >= half) {
			if (data[0] & 0x40)
				rproto_expire(rp, 1000 + (uint64_t)(n / 2));
			if (data[0] & 0x80)
				rproto_reset(rp, NULL);
		}
		done += k;
	}
	/* The connection goes: whatever is left fails now. */
	rproto_reset(rp, NULL);
	if (rproto_pending(rp))
		abort();
	for (int i = 0; i < n; i++)
		if (cmd[i].calls != !cmd[i].cancelled)
			abort(); /* not called exactly once */
	rproto_free(rp);
	return 0;
}
