/* store/redis_direct.c - the Redis backend's part of direct sessions (bound without XEP-0198): their directory entries, one FCALL each; and sessions' directed-presence recipients (tether_dpres).
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

static void on_dpres(const redisReply *r, const char *err, void *ud)
{
	struct store_dpres_op *d = ud;
	int rc = 0;
	if (err == rproto_err_reply)
		rc = rcodec_errno(r->str, r->len);
	else if (err)
		rc = err == rproto_err_timeout ? -ETIMEDOUT : err == rproto_err_closed ? -ENOTCONN : -EIO;
	d->err = rc;
	store_op_ready(&d->op);
}

/* tether_dpres on t:{bare}:dp:<sid> fenced by the session's record, or on
 * t:{bare}:dp:~<owner> fenced by the account's directory (redis_lib.lua,
 * DIRECTED PRESENCE). */
int rstore_submit_dpres(struct store_handle *h, struct store_op *op)
{
	static const char *const what[] = {
		[STORE_DPRES_ADD] = "+", [STORE_DPRES_DEL] = "-", [STORE_DPRES_CLEAR] = "0",
	};
	struct store_dpres_op *d = (struct store_dpres_op *)op;
	/* "t:{bare}:dp" then ":<sid>" or ":~<owner>" (longer than a sid) */
	char kdp[RKEY_LEN + RCODEC_OWNER_MAX + 2], kfence[RKEY_LEN], owner[RCODEC_OWNER_MAX], max[16];
	int n;
	if ((unsigned)d->what > STORE_DPRES_CLEAR ||
	    rcodec_owner_fmt(&d->owner, owner, sizeof(owner)) < 0 ||
	    (n = rkey(kdp, d->bare, "dp", NULL)) < 0 ||
	    (d->sid[0] ? rkey(kfence, d->bare, "s", d->sid) : rkey(kfence, d->bare, "dir", NULL)) < 0)
		return -EINVAL;
	snprintf(kdp + n, sizeof(kdp) - (size_t)n, ":%s%s", d->sid[0] ? "" : "~",
		 d->sid[0] ? d->sid : owner);
	snprintf(max, sizeof(max), "%u", d->max);
	const char *argv[] = { "FCALL", "tether_dpres", "2", kdp, kfence, what[d->what], owner,
			       d->jid, max, d->resource };
	int rc = rlink_command_strs(h->link, 10, argv, on_dpres, d, 0);
	return rc == -EPIPE ? -ENOTCONN : rc;
}
