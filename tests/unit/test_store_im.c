/* tests/unit/test_store_im.c - IM data in the memory store: rosters, subscriptions through both sides, offline messages, persistence across reopen, the asynchronous wrappers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tether/scram.h"
#include "tether/store.h"
#include "tether/store_im.h"

static char dir[256];
static char path[300];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/tether-im-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/var", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static struct store *open_ok(void)
{
	char err[256] = "";
	struct store *st = store_open("memory", path, err, sizeof(err));
	if (!st)
		print_error("store_open: %s\n", err);
	assert_non_null(st);
	return st;
}

static void add_user(struct store *st, const char *bare)
{
	struct user_creds c;
	assert_int_equal(scram_creds_derive(bare, 1, &c), 0);
	assert_int_equal(store_user_put(st, bare, &c), 0);
	scram_creds_wipe(&c);
}

/* A roster read into a small table. */
struct view {
	uint64_t ver;
	size_t n;
	struct im_item it[16];
};

static void view_item(void *ud, const struct im_item *it)
{
	struct view *v = ud;
	assert_true(v->n < 16);
	assert_int_equal(im_item_copy(&v->it[v->n++], it), 0);
}

static void view_read(struct store *st, const char *bare, struct view *v)
{
	memset(v, 0, sizeof(*v));
	assert_int_equal(store_im_read(st, bare, &v->ver, view_item, v), 0);
}

static void view_free(struct view *v)
{
	for (size_t i = 0; i < v->n; i++)
		im_item_clear(&v->it[i]);
	v->n = 0;
}

static const struct im_item *view_find(const struct view *v, const char *jid)
{
	for (size_t i = 0; i < v->n; i++)
		if (!strcmp(v->it[i].jid, jid))
			return &v->it[i];
	return NULL;
}

static void set_item(struct store *st, const char *bare, const char *jid, const char *name,
		     char **groups, size_t ng, int want)
{
	struct im_item it = { .jid = (char *)jid, .name = (char *)name, .groups = groups,
			      .ngroups = ng };
	struct im_change c;
	assert_int_equal(store_im_set(st, bare, &it, 3, &c), want);
	if (!want) {
		assert_true(c.pushed);
		assert_string_equal(c.item.jid, jid);
	}
	im_change_clear(&c);
}

static void test_roster_round_trip(void **state)
{
	(void)state;
	struct store *st = open_ok();
	char *g[] = { "Friends", "Work mates" };
	struct view v;
	view_read(st, "a@x", &v);
	assert_int_equal(v.n, 0);
	assert_int_equal(v.ver, 0);
	set_item(st, "a@x", "b@x", "Bob B\n<&>", g, 2, 0);
	set_item(st, "a@x", "c@x", NULL, NULL, 0, 0);
	set_item(st, "a@x", "b@x", "Bobby", g + 1, 1, 0);   /* an update */
	set_item(st, "a@x", "d@x", NULL, NULL, 0, 0);
	set_item(st, "a@x", "e@x", NULL, NULL, 0, -EDQUOT); /* max 3 */
	view_read(st, "a@x", &v);
	assert_int_equal(v.n, 3);
	assert_int_equal(v.ver, 4);
	const struct im_item *b = view_find(&v, "b@x");
	assert_non_null(b);
	assert_string_equal(b->name, "Bobby");
	assert_int_equal(b->ngroups, 1);
	assert_string_equal(b->groups[0], "Work mates");
	assert_int_equal(b->state, SUB_NONE);
	view_free(&v);

	struct im_change c, cc;
	assert_int_equal(store_im_remove(st, "a@x", "c@x", &c, &cc), 0);
	assert_true(c.removed);
	assert_int_equal(c.ver, 5);
	im_change_clear(&c);
	im_change_clear(&cc);
	assert_int_equal(store_im_remove(st, "a@x", "c@x", &c, &cc), -ENOENT);
	store_close(st);

	/* Persistence: everything is back after a reopen, in order. */
	st = open_ok();
	view_read(st, "a@x", &v);
	assert_int_equal(v.n, 2);
	assert_int_equal(v.ver, 5);
	assert_string_equal(v.it[0].jid, "b@x");
	assert_string_equal(v.it[0].name, "Bobby");
	assert_string_equal(v.it[1].jid, "d@x");
	assert_null(v.it[1].name);
	view_free(&v);
	store_close(st);
}

static enum sub_state state_of(struct store *st, const char *bare, const char *jid, int *visible)
{
	struct view v;
	view_read(st, bare, &v);
	const struct im_item *it = view_find(&v, jid);
	enum sub_state s = it ? it->state : SUB_NONE;
	if (visible)
		*visible = it ? it->visible : -1;
	view_free(&v);
	return s;
}

static void sub(struct store *st, const char *u, const char *c, enum sub_type t,
		struct im_sub_result *r)
{
	assert_int_equal(store_im_sub(st, u, c, t, "<presence type='subscribe'/>", 10, r), 0);
}

static void test_subscription_handshake(void **state)
{
	(void)state;
	struct store *st = open_ok();
	add_user(st, "a@x");
	add_user(st, "b@x");
	struct im_sub_result r;
	int vis;

	/* a asks b: a's item appears with ask; b keeps the request, hidden. */
	sub(st, "a@x", "b@x", SUB_SUBSCRIBE, &r);
	assert_true(r.out.deliver && r.contact_exists && r.in.deliver);
	assert_true(r.user.pushed);
	assert_true(sub_asks(r.user.item.state));
	assert_false(r.contact.pushed);
	im_sub_result_clear(&r);
	assert_int_equal(state_of(st, "a@x", "b@x", &vis), SUB_NONE_PO);
	assert_int_equal(vis, 1);
	assert_int_equal(state_of(st, "b@x", "a@x", &vis), SUB_NONE_PI);
	assert_int_equal(vis, 0);
	store_close(st);

	/* The request survives a restart. */
	st = open_ok();
	struct view v;
	view_read(st, "b@x", &v);
	assert_int_equal(v.n, 1);
	assert_string_equal(v.it[0].pending, "<presence type='subscribe'/>");
	view_free(&v);

	/* b approves: both sides change, b's item becomes visible. */
	sub(st, "b@x", "a@x", SUB_SUBSCRIBED, &r);
	assert_true(r.out.deliver && r.in.deliver);
	assert_true(r.user.pushed && r.contact.pushed);
	assert_string_equal(sub_attr(r.user.item.state), "from");
	assert_string_equal(sub_attr(r.contact.item.state), "to");
	im_sub_result_clear(&r);
	assert_int_equal(state_of(st, "b@x", "a@x", &vis), SUB_FROM);
	assert_int_equal(vis, 1);
	view_read(st, "b@x", &v);
	assert_null(v.it[0].pending); /* answered: forgotten */
	view_free(&v);

	/* b asks back, a approves: both. */
	sub(st, "b@x", "a@x", SUB_SUBSCRIBE, &r);
	im_sub_result_clear(&r);
	sub(st, "a@x", "b@x", SUB_SUBSCRIBED, &r);
	im_sub_result_clear(&r);
	assert_int_equal(state_of(st, "a@x", "b@x", NULL), SUB_BOTH);
	assert_int_equal(state_of(st, "b@x", "a@x", NULL), SUB_BOTH);

	/* A subscribe from an approved contact is answered for the user. */
	sub(st, "a@x", "b@x", SUB_SUBSCRIBE, &r);
	assert_true(r.auto_subscribed);
	assert_false(r.in.deliver);
	im_sub_result_clear(&r);
	assert_int_equal(state_of(st, "a@x", "b@x", NULL), SUB_BOTH);

	/* a unsubscribes: a From, b To. */
	sub(st, "a@x", "b@x", SUB_UNSUBSCRIBE, &r);
	im_sub_result_clear(&r);
	assert_int_equal(state_of(st, "a@x", "b@x", NULL), SUB_FROM);
	assert_int_equal(state_of(st, "b@x", "a@x", NULL), SUB_TO);

	/* b removes a: the contact side loses both directions. */
	struct im_change c, cc;
	assert_int_equal(store_im_remove(st, "b@x", "a@x", &c, &cc), 0);
	assert_true(cc.pushed);
	assert_string_equal(sub_attr(cc.item.state), "none");
	im_change_clear(&c);
	im_change_clear(&cc);
	assert_int_equal(state_of(st, "a@x", "b@x", &vis), SUB_NONE);
	assert_int_equal(vis, 1);

	/* To an account that does not exist: answered unsubscribed at once. */
	sub(st, "a@x", "nobody@x", SUB_SUBSCRIBE, &r);
	assert_false(r.contact_exists);
	im_sub_result_clear(&r);
	assert_int_equal(state_of(st, "a@x", "nobody@x", &vis), SUB_NONE);
	assert_int_equal(vis, 1);
	store_close(st);
}

struct msgs {
	size_t n;
	char *m[8];
};

static void take_one(void *ud, const char *data, size_t len)
{
	struct msgs *m = ud;
	assert_true(m->n < 8);
	assert_int_equal(strlen(data), len);
	m->m[m->n++] = strdup(data);
}

static void test_offline_cap_and_order(void **state)
{
	(void)state;
	struct store *st = open_ok();
	char buf[64];
	add_user(st, "a@x");
	assert_int_equal(store_im_offline_add(st, "nobody@x", "<x/>", 4, 3), -ENOENT);
	for (int i = 0; i < 3; i++) {
		int len = snprintf(buf, sizeof(buf), "<message>%d</message>", i);
		assert_int_equal(store_im_offline_add(st, "a@x", buf, (size_t)len, 3), 0);
	}
	assert_int_equal(store_im_offline_add(st, "a@x", "<x/>", 4, 3), -EDQUOT);
	store_close(st);

	st = open_ok(); /* kept across a restart */
	struct msgs m = { 0 };
	assert_int_equal(store_im_offline_take(st, "a@x", take_one, &m), 0);
	assert_int_equal(m.n, 3);
	for (size_t i = 0; i < m.n; i++) {
		snprintf(buf, sizeof(buf), "<message>%zu</message>", i);
		assert_string_equal(m.m[i], buf);
		free(m.m[i]);
	}
	m.n = 0;
	assert_int_equal(store_im_offline_take(st, "a@x", take_one, &m), 0);
	assert_int_equal(m.n, 0); /* taken means deleted */
	store_close(st);
	st = open_ok();
	assert_int_equal(store_im_offline_take(st, "a@x", take_one, &m), 0);
	assert_int_equal(m.n, 0);
	store_close(st);
}

/* ---- the asynchronous wrappers ------------------------------------------------ */

static int calls;

static void on_roster(void *ud, int err, uint64_t ver, const struct im_item *items, size_t n)
{
	(void)ud;
	assert_int_equal(err, 0);
	assert_int_equal(ver, 1);
	assert_int_equal(n, 1);
	assert_string_equal(items[0].jid, "b@x");
	calls++;
}

static void on_contacts(void *ud, int err, char *const *jids, const uint8_t *states, size_t n,
			char *const *pending, size_t np)
{
	(void)ud;
	(void)states;
	(void)jids;
	(void)pending;
	assert_int_equal(err, 0);
	assert_int_equal(n, 0);  /* b is not subscribed either way yet */
	assert_int_equal(np, 0);
	calls++;
}

static void on_set(void *ud, int err, const struct im_change *c, const struct im_change *cc)
{
	(void)ud;
	assert_int_equal(err, 0);
	assert_true(c->pushed);
	assert_null(cc);
	calls++;
}

static void on_msgs(void *ud, int err, char *const *msgs, const size_t *lens, size_t n)
{
	(void)ud;
	assert_int_equal(err, 0);
	assert_int_equal(n, 1);
	assert_int_equal(lens[0], 5);
	assert_string_equal(msgs[0], "<m/>x");
	calls++;
}

static void on_added(void *ud, int err)
{
	(void)ud;
	assert_int_equal(err, 0);
	calls++;
}

static void test_async(void **state)
{
	(void)state;
	struct store *st = open_ok();
	struct store_handle *h = store_attach(st, NULL);
	add_user(st, "a@x");
	add_user(st, "c@x");
	struct im_item it = { .jid = "b@x" };
	calls = 0;
	assert_non_null(store_im_set_async(h, "a@x", &it, 10, on_set, NULL));
	assert_non_null(store_im_roster_async(h, "a@x", on_roster, NULL));
	assert_non_null(store_im_contacts_async(h, "a@x", IM_WANT_FROM | IM_WANT_PENDING,
						on_contacts, NULL));
	assert_non_null(store_im_offline_add_async(h, "a@x", "<m/>x", 5, 10, on_added, NULL));
	assert_non_null(store_im_offline_take_async(h, "a@x", on_msgs, NULL));
	/* A cancelled take never happened: the message stays. */
	assert_non_null(store_im_offline_add_async(h, "c@x", "<m/>", 4, 10, NULL, NULL));
	struct store_op *op = store_im_offline_take_async(h, "c@x", on_msgs, NULL);
	store_op_cancel(op);
	for (int i = 0; i < 10 && store_pending(h); i++)
		store_poll(h);
	assert_int_equal(calls, 5);
	struct msgs m = { 0 };
	assert_int_equal(store_im_offline_take(st, "c@x", take_one, &m), 0);
	assert_int_equal(m.n, 1);
	free(m.m[0]);
	store_detach(h);
	store_close(st);
}

struct jids {
	size_t n;
	char *j[8];
};

static void take_jid(void *ud, const char *jid)
{
	struct jids *l = ud;
	assert_true(l->n < 8);
	l->j[l->n++] = strdup(jid);
}

static void jids_free(struct jids *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->j[i]);
	l->n = 0;
}

static void test_blocklist(void **state)
{
	(void)state;
	struct store *st = open_ok();
	char *add[] = { "b@x", "evil.example", "b@x", "c@x/r" };
	char *rm[] = { "b@x", "nobody@x" };
	struct jids l = { 0 };
	assert_int_equal(store_im_block(st, "a@x", IM_BLOCK_ADD, add, 4), 0);
	assert_int_equal(store_im_block(st, "a@x", IM_BLOCK_ADD, add, 1), 0); /* again: no error */
	assert_int_equal(store_im_blocks(st, "a@x", take_jid, &l), 0);
	assert_int_equal(l.n, 3);
	assert_string_equal(l.j[0], "b@x");
	assert_string_equal(l.j[2], "c@x/r");
	jids_free(&l);
	assert_int_equal(store_im_block(st, "a@x", IM_BLOCK_REMOVE, rm, 2), 0);
	store_close(st);
	st = open_ok(); /* persisted with the roster */
	assert_int_equal(store_im_blocks(st, "a@x", take_jid, &l), 0);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.j[0], "evil.example");
	jids_free(&l);
	assert_int_equal(store_im_block(st, "a@x", IM_BLOCK_CLEAR, NULL, 0), 0);
	assert_int_equal(store_im_blocks(st, "a@x", take_jid, &l), 0);
	assert_int_equal(l.n, 0);
	store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roster_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_subscription_handshake, setup, teardown),
		cmocka_unit_test_setup_teardown(test_offline_cap_and_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_async, setup, teardown),
		cmocka_unit_test_setup_teardown(test_blocklist, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
