/* store/redis_direct.c - the Redis backend's part of direct sessions (bound without XEP-0198): their directory entries, one FCALL each.
 *
 * The entry is "~<owner>|<avail>|<prio>" in t:{bare}:dir (redis_lib.lua,
 * DIRECT SESSIONS); the owner string names the stream as a session record's
 * owner does (redis_codec.c), so the check-and-set of an update or delete
 * in the library compares the node's incarnation and the slot's generation
 * too: a stream never touches an entry a newer bind wrote. */
#include "redis_keys.h"
#include "store_op.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "tether/rlink.h"

static void on_direct(const redisReply *r, const char *err, void *ud)
{
	struct store_direct_op *d = ud;
	int rc = 0;
	if (err == rproto_err_reply)
		rc = rcodec_errno(r->str, r->len);
	else if (err)
		rc = err == rproto_err_timeout ? -ETIMEDOUT : err == rproto_err_closed ? -ENOTCONN : -EIO;
	/* A SET answers {1, '', old owner} when it replaced another stream's
	 * session (to be kicked), else {1, nil}. */
	if (!rc && d->what == STORE_DIRECT_SET && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
	    r->element[2]->type == REDIS_REPLY_STRING &&
	    !rcodec_owner_parse(r->element[2]->str, r->element[2]->len, &d->old))
		d->replaced = 1;
	d->err = rc;
	store_op_ready(&d->op);
}

int rstore_submit_direct(struct store_handle *h, struct store_op *op)
{
	static const char *const fn[] = {
		[STORE_DIRECT_SET] = "tether_direct_set",
		[STORE_DIRECT_UPDATE] = "tether_direct_update",
		[STORE_DIRECT_DEL] = "tether_direct_del",
	};
	struct store_direct_op *d = (struct store_direct_op *)op;
	char kdir[RKEY_LEN], owner[RCODEC_OWNER_MAX], avail[4], prio[16];
	if ((unsigned)d->what > STORE_DIRECT_DEL || rkey(kdir, d->bare, "dir", NULL) < 0 ||
	    rcodec_owner_fmt(&d->owner, owner, sizeof(owner)) < 0)
		return -EINVAL;
	snprintf(avail, sizeof(avail), "%d", d->available ? 1 : 0);
	snprintf(prio, sizeof(prio), "%d", d->priority);
	const char *argv[] = { "FCALL", fn[d->what], "1", kdir, d->resource, owner, avail, prio };
	int argc = d->what == STORE_DIRECT_DEL ? 6 : 8;
	int rc = rlink_command_strs(h->link, argc, argv, on_direct, d, 0);
	return rc == -EPIPE ? -ENOTCONN : rc;
}
