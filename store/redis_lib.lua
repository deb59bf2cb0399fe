#!lua name=tether
--[[
store/redis_lib.lua - tether's Redis FUNCTION library: users, XEP-0198
sessions and their queues, ISR and FAST tokens, the route directory, node
leases. Loaded with FUNCTION LOAD REPLACE at start (Redis >= 7.0); functions
are persisted in the RDB/AOF and replicated, unlike EVALSHA scripts, which a
restart or failover turns into NOSCRIPT.

Everything here is the store's semantics (include/tether/store.h on the store
branch) moved next to the data: each function is one atomic step.

KEY LAYOUT
All keys start with a prefix chosen by the caller (below "t:") and are passed
in KEYS, never built here, so the prefix is the caller's business. Every key
is hash-tagged, and every function touches keys of ONE tag only, so the layout
is ready for Redis Cluster:

  t:{B}:user        hash   account B (bare JID): the SCRAM fields, opaque
                           (salt, iterations, StoredKey, ServerKey per hash)
  t:{B}:fast        hash   FAST slots of B: "v:<ua>" = version of <ua>'s
                           entry, "b:<ua>" = its two slots, sealed and packed
                           by C (opaque), "e:<ua>" = Redis TIME (ms) when its
                           last token expires; "v" = B's version counter
  t:{B}:isr         hash   ISR tokens of B's sessions: <sid> = sealed token
  t:{B}:dir         hash   route directory of B: <resource> = "<sid>|<avail>|<prio>"
                           for a XEP-0198 session, "~<owner>|<avail>|<prio>"
                           for a direct one (DIRECT SESSIONS below)
  t:{B}:s:<sid>     hash   session record (fields below)
  t:{B}:q:<sid>     list   the session's queue, oldest first
  t:{B}:roster      hash   B's roster (IM DATA below)
  t:{B}:off         list   B's offline messages
  t:{B}:block       zset   B's blocklist
  t:{B}:dp:<sid>    set    directed-presence recipients of session <sid>
  t:{B}:dp:~<owner> set    ...of the direct session (no record) of stream <owner>
                           (DIRECTED PRESENCE below)
  t:{node:<N>}:lease string node N's lease: the holder string, with a TTL
  t:{node:<N>}:in    stream node N's inbox: one consumer group per incarnation
                           of N, named after it (tether_inbox_reap)

Why sessions are tagged with the ACCOUNT and not with their id: the steps
that must be atomic span a session and its account: creating a session writes
its record and the directory entry of its resource; a password change must
revoke the FAST tokens and the ISR tokens of every session of the account in
the same step (store.h); destroying a session removes its directory entry
only if that entry is still its own. With {sid} tags each of those would need
two slots. The price: all of one account's sessions share a slot (a handful
of sessions: no hot spot worth the name), and every call on a session needs
its bare JID, which every caller has (resume is authenticated; delivery found
the session through the directory of the bare JID; the owner knows its own).
A session id presented with the wrong account names a key that does not
exist: the account check costs nothing and answers like an unknown session.
A localpart may contain '{' or '}': then the tag is a prefix of the JID, but
it is the same prefix for all of that account's keys, so they still share a
slot. Not in this library, because they cross tags: the node inbox streams
(t:{node:<N>}:in), the token-sealing key check, the user list (SCAN).
Exceptions, each said where it is: tether_deliver (the sender's session
and the inbox), tether_deliver_many (that, for the deliveries of one loop
turn of a node: many accounts), tether_sm_reap and tether_dir_reap (the
lease), tether_im_sub and tether_im_remove (two accounts' rosters: a
subscription is one step).

SESSION RECORD t:{B}:s:<sid>
  owner   opaque "<node>/<worker>/<slot>/<gen>" of the stream serving it
  epoch   +1 on every takeover; owner writes carry it (fencing)
  res     the resource it is bound to
  h_in    inbound count (XEP-0198 h of the client's stanzas)
  out     sequence number of the last entry appended (mod 2^32)
  acked   the client's last h (mod 2^32); the queue holds out - acked entries
  max     resumption window in seconds (0: not resumable)
  att     1 while a stream is attached
  exp     Redis TIME, in ms, after which a detached session is expired
  avail, prio   last broadcast presence (also in the directory entry)

QUEUE ENTRIES t:{B}:q:<sid>
"<seq>:<stamp_ms>:<meta><payload>": seq is the entry's number in the outbound
count, stamp_ms Redis TIME at append (the XEP-0203 delay stamp: one clock for
the whole cluster), payload the serialized stanza, opaque. meta is what the
appender passed beside the payload (opaque here; store/redis_async.c writes
the stanza's kind and addressing attributes, so a takeover rebuilds the
routed message without parsing it), "" when it passed none. The list holds exactly
the entries acked+1..out, in order, so an ack is one LTRIM of (h - acked)
entries, no parsing. seq and stamp are in the entry for the reader: a takeover
hands out the queue and each entry says what it is.

DIRECT SESSIONS
A session bound without XEP-0198 has no record and no queue: its stream is
the only place its stanzas can go. Its directory entry names its owner
(the stream's address, as a record's owner) behind a '~', which no sid
starts with. Delivery to it puts the stanza in the owner node's inbox (k 0,
"deliver": the entry as a queue entry numbered 0) and the owner hands it to
the stream, or, if that stream is gone, applies RFC 6121's rules for an
unavailable resource; nothing is kept here. Fencing is the owner string:
the entry is updated and removed only by that owner (check-and-set on the
whole string, which names the node's incarnation and the slot's
generation), a newer bind of the resource replaces it and learns whom to
kick, and enabling XEP-0198 on the same stream replaces it by the session
(sm_create: same owner, no kick). An entry whose owner's node incarnation
holds no lease any more (a dead node: its lease expires 5 s after it stops
renewing it) is skipped by deliveries and removed by the reaper
(tether_dir_reap), which sends its unavailable presence if it had
broadcast an available one.

DIRECTED PRESENCE
RFC 6121 4.6: a session that sent directed presence to a JID outside its
subscribers owes that JID unavailable presence when it ends. The stream
keeps the list in memory; on a shared store it also writes it here
(tether_dpres, by the stream that owns the session: its record's owner,
or its direct entry), so that the reaper can send that presence for a
session whose node died with the list (tether_sm_reap, tether_dir_reap
return the members). The set goes with the session: sm_destroy, sm_reap,
direct_del and dir_reap delete it; a bind that replaces another stream's
direct entry deletes that stream's set (a live one sends its own
unavailable presence from memory; a dead one's recipients are not told);
enabling XEP-0198 on the stream renames its direct set to the session's.

EPOCH FENCING AND ERRORS
An owner's writes carry the epoch it got from create or take; a write whose
epoch is no longer current fails with "ESTALE <owner> <epoch>" (the current
owner and epoch: the caller kicks itself, and can tell the new owner). Epoch 0
means "any" where allowed: delivery appends from other nodes (they own
nothing; the append returns the owner to notify), and destroy by an
administrator. Destroy with a real epoch is a check-and-delete: a cleanup by
an old owner cannot delete the session its successor took (MongooseIM#4788).
Errors are "-E<errno name> [details]": ENOENT (unknown, another account's, or
expired: one answer for all three), ESTALE, ERANGE (h acks more than sent),
EACCES (ISR token gone or changed), EEXIST, ENOSPC (queue full), EBUSY (lease
held by another), EINVAL (bad argument).

TIME
Expiry is decided here, with Redis's own TIME, never with a node's clock (a
monotonic clock means nothing on another node). update takes a TTL, not a
deadline; take compares against TIME. Since Redis 7 a function's effects are
replicated, not the function, so calling TIME is allowed.

THE ISR CHECK, AND WHY IT IS NOT DONE IN LUA
An <inst-resume/> does not present the token: it presents HMAC-SHA-256(token,
channel binding) (the HT mechanisms). Checking it needs the token in clear,
i.e. the sealing key (which must never be in Redis) and an HMAC (Redis's Lua
has redis.sha1hex and nothing keyed). So the check is split:
  1. C reads the sealed token (tether_sm_isr_get), unseals it, computes the
     expected HMAC and compares with CRYPTO_memcmp: constant time, in C, with
     the same path and cost when there is no token (isr_auth's dummy token).
  2. On a match, C calls tether_sm_take with the SEALED BYTES it verified as
     the proof. The take consumes the token only if the stored bytes are still
     exactly those, then takes the session, in one atomic step. Of N takes
     with one token at most one finds the bytes: single use.
  3. On a mismatch C calls tether_sm_isr_burn with the bytes it read: the
     token that was attacked dies (XEP-0397 §5), a newer one is untouched.
The comparison in step 2 is Lua's "==", which is not constant time. That is
acceptable because neither side is attacker-controlled or secret from the
caller: both are the sealed blob the node itself read from Redis a moment
before, and an attacker's bytes never reach this comparison (they stop at
the constant-time check in C). The alternative the brief suggests, storing
H(token) and comparing H(presented) in Lua, fits bearer tokens (client sends
the token) and would be sound even with a variable-time compare, since the
hash of a 256-bit random secret leaks nothing useful; it does not fit HT,
where the client never sends the token.
A mismatch in step 2 (the token was consumed or replaced in between) answers
EACCES without burning: the present token belongs to whoever won the race.

OPEN (for store/redis.c, not decided here)
- The store interface (store.h) names a session by id only in append, ack,
  update, destroy and set_isr; with this layout the Redis backend needs the
  bare JID too. Decided in store/redis_async.c: the backend keeps sid -> bare
  for the sessions its node created or took (deliveries know the bare JID).
- Counting an inbound stanza in the sender's h_in and appending it to the
  recipient's queue cross two accounts, hence two tags: they cannot be one
  function under Cluster rules (one Redis alone would run it). Proposed:
  make the append idempotent, keyed by (sender sid, sender's h_in), then
  count; a crash in between leaves h uncounted, the client resends after
  resuming, and the key makes the second append a no-op.
- Notifying the owner (XADD to t:{node:<N>}:in) is another tag too: it
  would follow the append as a separate command. A lost notification
  delays delivery until the next one or a resume, it does not lose the
  stanza.
- tether_deliver_many runs the deliveries a node issued in one loop turn
  as one call (one queue write per session, one count write per sender,
  one inbox entry per node, instead of each apart): under Cluster rules it
  would be split by slot, each part with its sender's count.
- take returns the whole queue in one reply: up to max_queue x
  max_stanza_size bytes. The backend's reply limit (rproto max_reply) must
  cover it, or take should hand the queue out in pages.
- FAST 0-RTT `count` is not checked here: 0-RTT is not accepted at all.
- Session keys carry no Redis TTL: a detached session is reaped by the
  reaper (it must bounce the queue, which an expiring key cannot do).
- hiredis 0.14.1 has no cluster support: under Redis Cluster the client
  would have to follow MOVED/ASK itself (one tag per call makes that a
  per-call redirect, never a split).
]]

local TWO32 = 4294967296

local function now_ms()
	local t = redis.call('TIME')
	return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function num(s)
	local n = tonumber(s)
	if n == nil then
		error({ err = 'EINVAL not a number' }) -- a table: the reply is exactly this error
	end
	return n
end

-- <e> is "CODE text": Redis keeps a first word as the error code only when
-- more follows ("ENOENT" alone would arrive as "ERR ENOENT").
local function err(e)
	return redis.error_reply(e)
end

-- The record as an array in a fixed order (C reads it by position):
-- epoch, owner, res, h_in, out, acked, max, att, avail, prio, exp.
local REC = { 'epoch', 'owner', 'res', 'h_in', 'out', 'acked', 'max', 'att', 'avail', 'prio', 'exp' }

local function rec_get(key)
	return redis.call('HMGET', key, unpack(REC))
end

local function stale(r)
	return err('ESTALE ' .. r[2] .. ' ' .. r[1])
end

-- The record at <key> if the session exists and <epoch> owns it (an epoch
-- of 0 passes when <any> is set); otherwise nil and the error to return.
local function owned(key, epoch, any)
	local r = rec_get(key)
	if not r[1] then
		return nil, err('ENOENT no such session')
	end
	if not (any and epoch == 0) and tonumber(r[1]) ~= epoch then
		return nil, stale(r)
	end
	return r
end

-- Revokes every token of account: FAST entries (the version counter stays,
-- so no version is ever given twice) and the ISR tokens of all its sessions.
local function revoke(fast, isr)
	local v = redis.call('HGET', fast, 'v')
	redis.call('DEL', fast, isr)
	if v then
		redis.call('HSET', fast, 'v', v)
	end
end

---------------------------------------------------------------- users

-- KEYS user. Returns the fields as HGETALL does (empty: no such user).
local function user_get(keys)
	return redis.call('HGETALL', keys[1])
end

-- KEYS user, fast, isr; ARGV field, value, ... Creates or replaces the user
-- and revokes the account's tokens: a password change ends FAST and ISR.
local function user_put(keys, args)
	if #args == 0 or #args % 2 ~= 0 then
		return err('EINVAL field/value pairs expected')
	end
	redis.call('DEL', keys[1])
	redis.call('HSET', keys[1], unpack(args))
	revoke(keys[2], keys[3])
	return 1
end

-- KEYS user, fast, isr [, roster, off, block]. 1, or ENOENT. The account's
-- IM data goes with it (its contacts' rosters keep their items: RFC 6121
-- has a deleted account answer like an unknown one, see tether_im_sub).
local function user_del(keys)
	if redis.call('DEL', keys[1]) == 0 then
		return err('ENOENT no such user')
	end
	revoke(keys[2], keys[3])
	if keys[6] then
		redis.call('DEL', keys[4], keys[5], keys[6])
	end
	return 1
end

---------------------------------------------------------------- sessions

-- KEYS rec, dir; ARGV sid, owner, resource, max [, avail, prio]. A new
-- session with epoch 1, attached, and the directory entry of its resource.
-- Returns {1, old sid, old owner}: the session that held the resource
-- before (to be kicked: the newer bind wins) and its owner, or {1, false}.
local function sm_create(keys, args)
	local sid, owner, res, max = args[1], args[2], args[3], num(args[4])
	local avail, prio = num(args[5] or '0'), num(args[6] or '0')
	if redis.call('EXISTS', keys[1]) == 1 then
		return err('EEXIST session exists')
	end
	redis.call('HSET', keys[1], 'epoch', 1, 'owner', owner, 'res', res, 'h_in', 0,
		'out', 0, 'acked', 0, 'max', max, 'att', 1, 'avail', avail, 'prio', prio, 'exp', 0,
		'since', now_ms())
	local old = redis.call('HGET', keys[2], res)
	redis.call('HSET', keys[2], res, string.format('%s|%d|%d', sid, avail, prio))
	local direct = old and string.match(old, '^~([^|]*)|')
	if direct then
		-- a direct session: ours (this stream enabled XEP-0198) or kicked;
		-- its directed-presence set becomes the session's, or goes
		local dp = string.sub(keys[2], 1, -4) .. 'dp:'
		if direct ~= owner then
			redis.call('DEL', dp .. '~' .. direct)
			return { 1, '', direct }
		end
		if redis.call('EXISTS', dp .. '~' .. owner) == 1 then
			redis.call('RENAME', dp .. '~' .. owner, dp .. sid)
		end
		return { 1, false }
	end
	if old then
		old = string.match(old, '^([^|]*)')
		local base = string.sub(keys[2], 1, -4) -- "t:{bare}:"
		local prev = redis.call('HGET', base .. 's:' .. old, 'owner')
		if prev and old ~= sid then
			return { 1, old, prev }
		end
	end
	return { 1, false }
end

-- KEYS rec, q; ARGV epoch (0: not the owner, e.g. delivery), payload, max
-- entries (0: no limit) [, meta (stored before the payload)]. Returns {seq,
-- owner}: the entry's sequence number and whom to notify.
local function sm_append(keys, args)
	local epoch, payload, maxq, meta = num(args[1]), args[2], num(args[3]), args[4] or ''
	local r, e = owned(keys[1], epoch, true)
	if not r then
		return e
	end
	local out, acked = tonumber(r[5]), tonumber(r[6])
	if maxq > 0 and (out - acked) % TWO32 >= maxq then
		return err('ENOSPC queue full')
	end
	local seq = (out + 1) % TWO32
	local entry = string.format('%d:%d:', seq, now_ms()) .. meta .. payload
	redis.call('RPUSH', keys[2], entry)
	redis.call('HSET', keys[1], 'out', seq)
	redis.call('HINCRBY', keys[1], 'qb', #entry)
	return { seq, r[2] }
end

-- KEYS rec, q; ARGV epoch, h. Releases the entries up to h. Returns the
-- entries still queued; ERANGE if h acks more than was appended.
local function sm_ack(keys, args)
	local epoch, h = num(args[1]), num(args[2])
	local r, e = owned(keys[1], epoch, false)
	if not r then
		return e
	end
	local out, acked = tonumber(r[5]), tonumber(r[6])
	local n, queued = (h - acked) % TWO32, (out - acked) % TWO32
	if h < 0 or h >= TWO32 or n > queued then
		return err('ERANGE h acks more than was sent')
	end
	if n > 0 then
		-- the queue's bytes (qb) go down by what leaves it
		local gone = 0
		for _, e in ipairs(redis.call('LRANGE', keys[2], 0, n - 1)) do
			gone = gone + #e
		end
		redis.call('LTRIM', keys[2], n, -1)
		redis.call('HSET', keys[1], 'acked', h)
		redis.call('HINCRBY', keys[1], 'qb', -gone)
	end
	return queued - n
end

-- KEYS rec, dir; ARGV sid, epoch, h_in, max, attached, ttl_ms, avail, prio
-- [, im]. The owner's part of the record; a detached session expires ttl_ms
-- from now (Redis TIME). The directory entry follows if it is still this
-- session's. im: the session's IM state (opaque), kept for sm_take.
local function sm_update(keys, args)
	local sid, epoch = args[1], num(args[2])
	local h_in, max, att, ttl = num(args[3]), num(args[4]), num(args[5]), num(args[6])
	local avail, prio = num(args[7]), num(args[8])
	local r, e = owned(keys[1], epoch, false)
	if not r then
		return e
	end
	local exp = 0
	if att == 0 then
		exp = now_ms() + ttl
	end
	redis.call('HSET', keys[1], 'h_in', h_in, 'max', max, 'att', att, 'exp', exp,
		'avail', avail, 'prio', prio)
	if args[9] then
		redis.call('HSET', keys[1], 'im', args[9])
	end
	local cur = redis.call('HGET', keys[2], r[3])
	if cur and string.match(cur, '^([^|]*)') == sid then
		redis.call('HSET', keys[2], r[3], string.format('%s|%d|%d', sid, avail, prio))
	end
	return 1
end

-- 1 if the node incarnation of <owner> ("<name>.<boot>/...") holds its
-- lease. The lease key is another slot (as in sm_reap).
local function alive(owner)
	local inc = string.match(owner, '^([^/]+)')
	local name = inc and string.match(inc, '^([^.]+)')
	return name ~= nil and redis.call('GET', 't:{node:' .. name .. '}:lease') == inc
end

-- KEYS rec, q, isr; ARGV sid, new owner, proof (the sealed ISR token C
-- verified, or "" for none). Makes the caller the owner: epoch + 1,
-- attached. Returns {record before (REC order, epoch = the NEW epoch),
-- queue entries, IM state ("" if none was written), 1 if the owner before
-- was another node's incarnation that holds no lease (a dead node: for
-- metrics) else 0}. ENOENT: unknown, other account's (no such key), not
-- resumable, or expired at Redis TIME. EACCES: the proof is not the token
-- stored now. A matching proof is consumed first, whatever follows.
local function sm_take(keys, args)
	local sid, owner, proof = args[1], args[2], args[3]
	if proof ~= '' then
		local tok = redis.call('HGET', keys[3], sid)
		if tok ~= proof then
			return err('EACCES token gone or changed')
		end
		redis.call('HDEL', keys[3], sid)
	end
	local r = rec_get(keys[1])
	if not r[1] then
		return err('ENOENT no such session')
	end
	if tonumber(r[7]) == 0 or (tonumber(r[8]) == 0 and now_ms() > tonumber(r[11])) then
		return err('ENOENT no such session')
	end
	local dead = 0
	if string.match(r[2], '^([^/]*)') ~= string.match(owner, '^([^/]*)') and not alive(r[2]) then
		dead = 1 -- the lease is another slot, as in sm_reap
	end
	local epoch = tonumber(r[1]) + 1
	redis.call('HSET', keys[1], 'epoch', epoch, 'owner', owner, 'att', 1)
	r[1] = epoch
	return { r, redis.call('LRANGE', keys[2], 0, -1), redis.call('HGET', keys[1], 'im') or '', dead }
end

-- KEYS rec; ARGV epoch, owner. Undoes a takeover nobody will use (the
-- stream that asked for it closed before the reply): if <epoch> (the one the
-- take gave) still owns the session, it becomes detached with <owner> (the
-- owner before the take) and expires after its window, from Redis TIME, so
-- anyone of the account can resume it. 1, or ENOENT / ESTALE (someone took it
-- since: theirs now, untouched).
local function sm_release(keys, args)
	local epoch, owner = num(args[1]), args[2]
	local r, e = owned(keys[1], epoch, false)
	if not r then
		return e
	end
	redis.call('HSET', keys[1], 'owner', owner, 'att', 0, 'exp', now_ms() + tonumber(r[7]) * 1000)
	return 1
end

-- KEYS rec, q, isr, dir; ARGV sid, epoch (0: any). Check-and-delete: removes
-- the session only if epoch is still its epoch, with its ISR token and its
-- directory entry (only if that entry is still its own). Returns {record,
-- queue} as take does (epoch unchanged), for bouncing what was unacked.
local function sm_destroy(keys, args)
	local sid, epoch = args[1], num(args[2])
	local r, e = owned(keys[1], epoch, true)
	if not r then
		return e
	end
	local q = redis.call('LRANGE', keys[2], 0, -1)
	redis.call('DEL', keys[1], keys[2], string.sub(keys[4], 1, -4) .. 'dp:' .. sid)
	redis.call('HDEL', keys[3], sid)
	local cur = redis.call('HGET', keys[4], r[3])
	if cur and string.match(cur, '^([^|]*)') == sid then
		redis.call('HDEL', keys[4], r[3])
	end
	return { r, q }
end

-- KEYS rec (a session record, as SCAN found it). The reaper's step for one
-- session: nothing while its owner node is alive (the node's lease holds
-- the owner's incarnation; it expires 5 s after the node stops renewing
-- it). Of a dead owner: an attached session becomes detached now, resumable
-- for its window (its client may resume it on any node meanwhile); a
-- detached one past its expiry is removed like sm_destroy and returned as
-- {record, queue, bare JID, directed-presence recipients} for its stanzas
-- to be re-routed or bounced, its unavailable presence sent if it was
-- available and to whom it sent directed presence (RFC 6121).
-- Returns 0, 1 (detached now) or {r, q, bare, dp}. The lease key is another
-- slot: under Redis Cluster this check would be a read before the call.
local function sm_reap(keys)
	local rk = keys[1]
	local r = rec_get(rk)
	if not r[1] then
		return 0
	end
	local inc = string.match(r[2], '^([^/]+)')
	local name = inc and string.match(inc, '^([^.]+)')
	if not name or redis.call('GET', 't:{node:' .. name .. '}:lease') == inc then
		return 0
	end
	local now = now_ms()
	if tonumber(r[8]) == 1 then
		redis.call('HSET', rk, 'att', 0, 'exp', now + tonumber(r[7]) * 1000)
		return 1
	end
	if now <= tonumber(r[11]) then
		return 0
	end
	local base, sid = string.match(rk, '^(.*:)s:([^:]*)$')
	local qk, dk = base .. 'q:' .. sid, base .. 'dir'
	local q = redis.call('LRANGE', qk, 0, -1)
	local dp = redis.call('SMEMBERS', base .. 'dp:' .. sid)
	redis.call('DEL', rk, qk, base .. 'dp:' .. sid)
	redis.call('HDEL', base .. 'isr', sid)
	local cur = redis.call('HGET', dk, r[3])
	if cur and string.match(cur, '^([^|]*)') == sid then
		redis.call('HDEL', dk, r[3])
	end
	return { r, q, string.match(rk, '^t:{(.*)}:s:[^:]*$') or '', dp }
end

-- KEYS rec; read-only. The record in REC order, or ENOENT.
local function sm_get(keys)
	local r = rec_get(keys[1])
	if not r[1] then
		return err('ENOENT no such session')
	end
	return r
end

-- KEYS rec, isr; ARGV sid, epoch, sealed token ("" clears). Owner only.
local function sm_set_isr(keys, args)
	local sid, epoch, tok = args[1], num(args[2]), args[3]
	local r, e = owned(keys[1], epoch, false)
	if not r then
		return e
	end
	if tok == '' then
		redis.call('HDEL', keys[2], sid)
	else
		redis.call('HSET', keys[2], sid, tok)
	end
	return 1
end

-- KEYS rec, isr; ARGV sid; read-only. The sealed ISR token of a session
-- that exists, or nil (no session, or no token).
local function sm_isr_get(keys, args)
	if redis.call('EXISTS', keys[1]) == 0 then
		return false
	end
	return redis.call('HGET', keys[2], args[1])
end

-- KEYS rec, isr; ARGV sid, the sealed token a proof failed against. Destroys
-- that token if it is still the session's (XEP-0397: an invalid attempt kills
-- the token). Returns the record (REC order) so the caller can end a
-- detached session, or ENOENT.
local function sm_isr_burn(keys, args)
	local sid, tok = args[1], args[2]
	if redis.call('HGET', keys[2], sid) == tok then
		redis.call('HDEL', keys[2], sid)
	end
	return sm_get(keys)
end

-- KEYS dir; read-only. The directory of the account, as HGETALL:
-- resource, "<sid>|<avail>|<prio>", ...
local function dir_get(keys)
	return redis.call('HGETALL', keys[1])
end

---------------------------------------------------------------- delivery

-- The inbox stream of the node an owner ("<name>.<boot>/w/s/g") lives on.
local function inbox_of(owner)
	local name = string.match(owner, '^([^./]+)')
	return 't:{node:' .. name .. '}:in'
end

-- The owner of direct entry <v> (DIRECT SESSIONS), or nil.
local function direct_owner(v)
	return v and string.match(v, '^~([^|]*)|')
end

-- KEYS dir (a directory, as SCAN found it). The reaper's step for the
-- direct sessions (no record) of an account: the entries whose owner's
-- node holds no lease any more are removed, with their directed-presence
-- sets. Returns {bare JID, {resource, available (0/1), {recipient, ...}},
-- ...}: those of the removed entries that had broadcast available
-- presence or sent directed presence (the reaper sends their unavailable
-- presence), or 0.
local function dir_reap(keys)
	local all, out = redis.call('HGETALL', keys[1]), nil
	local dp = string.sub(keys[1], 1, -4) .. 'dp:~'
	for i = 1, #all, 2 do
		local d = direct_owner(all[i + 1])
		if d and not alive(d) then
			redis.call('HDEL', keys[1], all[i])
			local avail = string.match(all[i + 1], '^[^|]*|(%-?%d+)|') == '1' and 1 or 0
			local to = redis.call('SMEMBERS', dp .. d)
			redis.call('DEL', dp .. d)
			if avail == 1 or #to > 0 then
				out = out or { string.match(keys[1], '^t:{(.*)}:dir$') or '' }
				out[#out + 1] = { all[i], avail, to }
			end
		end
	end
	return out or 0
end

-- Directory entry <res> = <v> as a target: {res, sid}, {res, false,
-- owner} for a direct session, or nil for a direct session of a dead
-- node (the stanza then finds no session there). Its entry stays for the
-- reaper (dir_reap), which removes it and sends its unavailable presence.
local function target_of(res, v)
	local d = direct_owner(v)
	if not d then
		return { res, string.match(v, '^([^|]*)') }
	end
	if alive(d) then
		return { res, false, d }
	end
	return nil
end

-- The sessions a stanza to <res> goes to: that resource's; for "" the
-- available ones of the highest non-negative priority (RFC 6121 8.5.2.1.1);
-- for "*" all of them and for "+" the available ones (presence). With
-- <every> (a headline message, RFC 6121 8.5.2.1.2), "" is all the
-- available ones of a non-negative priority. Each as target_of says.
local function targets(dir, res, every)
	local t = {}
	if res == '*' or res == '+' then
		local all = redis.call('HGETALL', dir)
		for i = 1, #all, 2 do
			local sid, avail = string.match(all[i + 1], '^([^|]*)|(%-?%d+)|')
			local x = sid and (res == '*' or avail == '1') and target_of(all[i], all[i + 1])
			if x then
				t[#t + 1] = x
			end
		end
		return t
	end
	if res ~= '' then
		local v = redis.call('HGET', dir, res)
		t[1] = v and target_of(res, v) or nil
		return t
	end
	local all, best = redis.call('HGETALL', dir), nil
	for i = 1, #all, 2 do
		local sid, avail, prio = string.match(all[i + 1], '^([^|]*)|(%-?%d+)|(%-?%d+)$')
		prio = tonumber(prio)
		local x = sid and avail == '1' and prio >= 0 and target_of(all[i], all[i + 1])
		if x and every then
			t[#t + 1] = x
		elseif x then
			if best == nil or prio > best then
				best, t = prio, {}
			end
			if prio == best then
				t[#t + 1] = x
			end
		end
	end
	return t
end

-- One call's deliveries (tether_deliver, tether_deliver_many) share a
-- state and write it back once, at the end (call_end): each queue gets one
-- RPUSH and its record one HSET however many entries it got, each sender's
-- session one HSET of its count, each node one XADD carrying all its
-- notices. The call is one step: nothing of it is visible before the rest.
local NOTICES_MAX = 64   -- notices in one inbox entry (XADD's arguments go through unpack)
local NOTICE_BYTES = 65536 -- ...and bytes of entries, about (an XREAD of redis_inbox.c reads 32)
local ADDS_MAX = 256     -- entries one RPUSH appends (same reason)
local INBOX_MANY = 10    -- inbox entry kind: several notices (redis_inbox.c)

local function call_new(maxq, maxb, me)
	return { now = now_ms(), maxq = maxq, maxb = maxb, me = me, recs = {}, rlist = {},
		senders = {}, slist = {}, boxes = {}, blist = {}, tgts = {} }
end

-- The node incarnation "<name>.<boot>" of an owner "<name>.<boot>/w/s/g".
local function node_of(owner)
	return string.match(owner, '^([^/]+)')
end

-- Writes inbox <b>'s notices: one alone in the single form ('k', kind,
-- 'to', owner, 'e', entry), which nodes older than the batched form read
-- too; several as kind INBOX_MANY followed by ('n', kind, 'to', owner,
-- 'e', entry) per notice. The stream keeps about 10000 entries
-- (RINBOX_MAXLEN), 1000 once it gets entries of several notices: about as
-- many notices, and bytes, as before those.
local function box_write(b)
	local f = b.f
	if b.n == 1 then
		redis.call('XADD', b.key, 'MAXLEN', '~', 10000, '*', -- RINBOX_MAXLEN
			'k', f[2], 'to', f[4], 'e', f[6])
	elseif b.n > 1 then
		redis.call('XADD', b.key, 'MAXLEN', '~', 1000, '*', 'k', INBOX_MANY, unpack(f))
	end
	b.n, b.f, b.bytes = 0, {}, 0
end

-- The inbox of <owner>'s node in this call: its notices so far.
local function box_of(c, owner)
	local key = inbox_of(owner)
	local b = c.boxes[key]
	if not b then
		b = { key = key, n = 0, f = {}, bytes = 0 }
		c.boxes[key] = b
		c.blist[#c.blist + 1] = b
	end
	return b
end

-- Notice <kind> (0: deliver, 3: appended) of <entry> for <owner>, into
-- inbox <b>.
local function notice(b, kind, owner, entry)
	local f, i = b.f, #b.f
	f[i + 1], f[i + 2], f[i + 3], f[i + 4], f[i + 5], f[i + 6] = 'n', kind, 'to', owner, 'e', entry
	b.n, b.bytes = b.n + 1, b.bytes + #entry
	if b.n == NOTICES_MAX or b.bytes >= NOTICE_BYTES then
		box_write(b)
	end
end

-- Queue <q>'s entries appended by this call so far, and its record's count.
local function rec_write(q)
	if #q.add > 0 then
		redis.call('RPUSH', q.qk, unpack(q.add))
		redis.call('HSET', q.rk, 'out', q.out, 'qb', q.qb)
		q.add = {}
	end
end

-- The XEP-0198 session of record <rk> and queue <qk> as this call sees
-- it: {owner, out, acked, att, qb, add (entries to append)}, or false.
local function rec_of(c, rk, qk)
	local q = c.recs[rk]
	if q == nil then
		local r = redis.call('HMGET', rk, 'owner', 'out', 'acked', 'att', 'qb')
		q = false
		if r[1] then
			q = { rk = rk, qk = qk, owner = r[1], out = tonumber(r[2]), acked = tonumber(r[3]),
				att = r[4], qb = tonumber(r[5] or '0'), add = {}, box = box_of(c, r[1]) }
			c.rlist[#c.rlist + 1] = q
		end
		c.recs[rk] = q
	end
	return q
end

-- The sender's session <key> at <epoch>: its inbound count <h> is written
-- at the end of the call, in the same step as the deliveries. Returns nil,
-- or the error of a session taken over (ESTALE) or gone (ENOENT).
local function sender_count(c, key, epoch, h)
	local s = c.senders[key]
	if s == nil or s.epoch ~= epoch then
		local r = redis.call('HMGET', key, 'epoch', 'owner')
		if not r[1] then
			s = { epoch = epoch, e = err('ENOENT no such session') }
		elseif tonumber(r[1]) ~= epoch then
			s = { epoch = epoch, e = err('ESTALE ' .. r[2] .. ' ' .. r[1]) }
		else
			s = { epoch = epoch, key = key }
			c.slist[#c.slist + 1] = s
		end
		c.senders[key] = s
	end
	if s.e then
		return s.e
	end
	s.h = h
	return nil
end

local function call_end(c)
	for _, q in ipairs(c.rlist) do
		rec_write(q)
	end
	for _, s in ipairs(c.slist) do
		redis.call('HSET', s.key, 'h_in', s.h)
	end
	for _, b in ipairs(c.blist) do
		box_write(b)
	end
end

-- Direct target <t> of a delivery: into its owner node's inbox (k 0, the
-- entry numbered 0), unless the owner is on node incarnation c.me, the
-- caller's, which hands it over itself. Returns the reply row.
local function deliver_direct(c, t, meta, payload)
	local owner = t[3]
	if node_of(owner) ~= c.me then
		notice(box_of(c, owner), 0, owner, string.format('0:%d:', c.now) .. meta .. payload)
	end
	return { t[1], 0, owner, 1 }
end

-- The XEP-0198 session of record <rk> and queue <qk>, as <res>: the stanza
-- is appended and its owner's node told (k 3). Returns the reply row
-- {res, seq, owner} ({res, -1, owner}: its detached queue is full, nothing
-- written), or nil (no such session, or owned by node incarnation <skip>).
local function deliver_queued(c, rk, qk, res, meta, payload, skip)
	local q = rec_of(c, rk, qk)
	if not q then
		return nil
	end
	local seq = (q.out + 1) % TWO32
	local entry = string.format('%d:%d:', seq, c.now) .. meta .. payload
	if q.att == '0' and ((c.maxq > 0 and (q.out - q.acked) % TWO32 >= c.maxq) or
			     (c.maxb > 0 and q.qb + #entry > c.maxb)) then
		-- a detached queue at its bound: nobody reads it; the sender
		-- gets the stanza back (seq -1), the session lives on
		return { res, -1, q.owner }
	end
	if skip ~= '' and node_of(q.owner) == skip then
		return nil
	end
	q.out, q.qb = seq, q.qb + #entry
	q.add[#q.add + 1] = entry
	if #q.add == ADDS_MAX then
		rec_write(q)
	end
	notice(q.box, 3, q.owner, entry)
	return { res, seq, q.owner }
end

-- The targets of <res> in directory <dir> (targets()), read once a call;
-- a queued session's target gets its record's and queue's keys (rk, qk).
local function targets_of(c, dir, res, every)
	local byres = c.tgts[dir]
	if not byres then
		byres = {}
		c.tgts[dir] = byres
	end
	local id = every and res .. '\n' or res
	local ts = byres[id]
	if not ts then
		ts = targets(dir, res, every)
		local base = string.sub(dir, 1, -4) -- "t:{bare}:"
		for _, t in ipairs(ts) do
			if not t[3] then
				t.rk, t.qk = base .. 's:' .. t[2], base .. 'q:' .. t[2]
			end
		end
		byres[id] = ts
	end
	return ts
end

-- Whether blocklist <bk> blocks <jid> (prepared): an item equal to it, to
-- its bare JID or to its domain (XEP-0191 3.4 with XEP-0016 matching, as
-- server/presence.c's is_blocked). An account without a list costs one
-- EXISTS.
local function blocks(bk, jid)
	if redis.call('EXISTS', bk) == 0 then
		return false
	end
	local bare = string.match(jid, '^[^/]*')
	local dom = string.match(bare, '@(.*)$') or bare
	return redis.call('ZSCORE', bk, jid) ~= false or redis.call('ZSCORE', bk, bare) ~= false or
		redis.call('ZSCORE', bk, dom) ~= false
end

-- Delivery <d> (fields as tether_deliver's arguments) in call <c>: its
-- reply rows, or the sender's error.
local function deliver_one(c, d)
	if d.sender then
		local e = sender_count(c, d.sender, d.epoch, d.h)
		if e then
			return e
		end
	end
	if d.from ~= '' and blocks(string.sub(d.dir, 1, -4) .. 'block', d.from) then
		return err('EACCES blocked by the recipient') -- XEP-0191: nowhere appended
	end
	local out, skip = {}, d.skip
	for _, t in ipairs(targets_of(c, d.dir, d.res, d.every)) do
		local row
		if not t[3] and d.unqueued then
			local owner = redis.call('HGET', t.rk, 'owner')
			if owner and (skip == '' or node_of(owner) ~= skip) then
				row = deliver_direct(c, { t[1], t[2], owner }, d.meta, d.payload)
			end
		elseif not t[3] then
			row = deliver_queued(c, t.rk, t.qk, t[1], d.meta, d.payload, skip)
		elseif skip == '' or node_of(t[3]) ~= skip then
			row = deliver_direct(c, t, d.meta, d.payload)
		end
		out[#out + 1] = row
	end
	return out
end

-- KEYS dir; ARGV resource ("" for the account's bare JID; "*" or "+" for
-- presence to all or the available sessions), meta, payload [, the sender
-- node's incarnation, whose sessions "*" and "+" skip ("" none), the
-- bounds of a detached queue in entries and bytes (0: none), the sender's
-- epoch and h_in (with KEYS[2]), the caller's node incarnation, whose
-- direct sessions it serves itself ("" none), "1" for a headline message
-- (to the bare JID: every available session of non-negative priority),
-- "1" for what the session acts on rather than a client reads (a presence
-- probe, the server's internal pushes and copies): it goes through the
-- owner's inbox like a direct session's stanzas, never into a queue; the
-- session queues whatever it writes to its client, the sender checked
-- against the recipient's blocklist ("" none: the account's own JIDs, and
-- what the session acts on itself, which it filters): a stanza from a JID
-- the account blocks is appended nowhere, so no session, resumed or not,
-- on any node, is handed it (XEP-0191), and EACCES is returned; the
-- sender's count is still written, the stanza was handled].
-- A target
-- whose detached queue is full is reported with seq -1 and not written.
-- With KEYS[2], the sender's session record, and ARGV epoch, h_in: its
-- inbound count is written in the same step (ESTALE, and nothing
-- delivered, if that session was taken over). KEYS[2] is another slot.
-- A direct session (no queue) gets the stanza through its owner's inbox
-- and is reported as {resource, 0, owner, 1}.
-- Route to sessions: the stanza is appended to the queue of each target
-- session (numbered there: the one place that fixes its order) and its
-- owner's node is told through its inbox (k 3: appended; e: the entry as
-- queued). Returns {resource, seq, owner} per target: empty when no session
-- of the directory matches (then the sender's node decides: offline,
-- bounce). Writes the node inbox too, another slot: under Redis Cluster the
-- notice would be a second call (see the header).
-- Nodes send tether_deliver_many; this one stays for nodes of before it.
local function deliver(keys, args)
	local d = { dir = keys[1], res = args[1], meta = args[2], payload = args[3],
		skip = args[4] or '', every = args[10] == '1', unqueued = args[11] == '1',
		from = args[12] or '' }
	if keys[2] then
		d.sender, d.epoch, d.h = keys[2], num(args[7]), num(args[8])
	end
	local c = call_new(tonumber(args[5] or '0'), tonumber(args[6] or '0'), args[9] or '')
	local out = deliver_one(c, d)
	call_end(c)
	return out
end

-- KEYS the keys of each delivery in turn: its directory, then its
-- sender's session record if it has one. ARGV the bounds of a detached
-- queue in entries and bytes, the caller's node incarnation (as
-- tether_deliver's), then per delivery MANY_ARGS: how many keys it has
-- (1 or 2), resource, meta, payload, the node incarnation to skip ("" none),
-- the sender's epoch and h_in ("0" without a sender), headline "1"/"0",
-- unqueued "1"/"0", the sender checked against the recipient's blocklist
-- (as tether_deliver's ARGV[12]). The deliveries run in order, as one step; the reply
-- has one element per delivery: tether_deliver's reply, or its error (a
-- sender taken over: ESTALE, nothing of that delivery done). A bad
-- argument fails the whole call before anything is written.
local MANY_ARGS = 10
local function deliver_many(keys, args)
	if (#args - 3) % MANY_ARGS ~= 0 then
		return err('EINVAL arguments')
	end
	local c = call_new(num(args[1]), num(args[2]), args[3])
	local list, k = {}, 1
	for i = 4, #args, MANY_ARGS do
		local nk = num(args[i])
		local d = { dir = keys[k], res = args[i + 1], meta = args[i + 2], payload = args[i + 3],
			skip = args[i + 4], every = args[i + 7] == '1', unqueued = args[i + 8] == '1',
			from = args[i + 9] }
		if nk == 2 then
			d.sender, d.epoch, d.h = keys[k + 1], num(args[i + 5]), num(args[i + 6])
		end
		if (nk ~= 1 and nk ~= 2) or not d.dir or (nk == 2 and not d.sender) then
			return err('EINVAL keys')
		end
		list[#list + 1] = d
		k = k + nk
	end
	local out = {}
	for i, d in ipairs(list) do
		out[i] = deliver_one(c, d)
	end
	call_end(c)
	return out
end

-- KEYS dir; ARGV resource, owner, avail, prio. A direct session's bind:
-- its entry replaces whatever held the resource (the newer bind wins).
-- Returns {1, '', old owner} when that was another stream's session (to be
-- kicked), else {1, false}.
local function direct_set(keys, args)
	local res, owner, avail, prio = args[1], args[2], num(args[3]), num(args[4])
	local old = redis.call('HGET', keys[1], res)
	redis.call('HSET', keys[1], res, string.format('~%s|%d|%d', owner, avail, prio))
	local prev = direct_owner(old)
	if prev and prev ~= owner then
		redis.call('DEL', string.sub(keys[1], 1, -4) .. 'dp:~' .. prev)
	end
	if old and not prev then
		local sid = string.match(old, '^([^|]*)')
		prev = redis.call('HGET', string.sub(keys[1], 1, -4) .. 's:' .. sid, 'owner')
	end
	if prev and prev ~= owner then
		return { 1, '', prev }
	end
	return { 1, false }
end

-- KEYS dir; ARGV resource, owner, avail, prio. A direct session's presence,
-- written only if the entry is still this owner's. 1, or 0.
local function direct_update(keys, args)
	local res, owner, avail, prio = args[1], args[2], num(args[3]), num(args[4])
	if direct_owner(redis.call('HGET', keys[1], res)) ~= owner then
		return 0
	end
	redis.call('HSET', keys[1], res, string.format('~%s|%d|%d', owner, avail, prio))
	return 1
end

-- KEYS dir; ARGV resource, owner. Check-and-delete: removes the entry only
-- if it is still this owner's direct entry; resource "": whichever entry of
-- the account is (a stream found gone by a stanza that does not say which
-- resource it was for). Returns how many went.
local function direct_del(keys, args)
	local res, owner = args[1], args[2]
	-- the stream's own directed-presence set: whatever the entry says
	redis.call('DEL', string.sub(keys[1], 1, -4) .. 'dp:~' .. owner)
	if res ~= '' then
		if direct_owner(redis.call('HGET', keys[1], res)) ~= owner then
			return 0
		end
		redis.call('HDEL', keys[1], res)
		return 1
	end
	local all, n = redis.call('HGETALL', keys[1]), 0
	for i = 1, #all, 2 do
		if direct_owner(all[i + 1]) == owner then
			redis.call('HDEL', keys[1], all[i])
			n = n + 1
		end
	end
	return n
end

-- KEYS dp (the set), fence (the session's record, or the directory for a
-- direct session); ARGV op ("+" add, "-" remove, "0" clear all), owner
-- (the stream), JID, max members, resource ("" for a XEP-0198 session, else
-- the direct entry's). The directed-presence recipients of a session
-- (DIRECTED PRESENCE), written only by the stream that owns it now: the
-- record's owner, or the direct entry's. 1, 0 (not the owner: nothing
-- written), or EDQUOT (the set holds <max>: the stream keeps no more).
local function dpres(keys, args)
	local op, owner, jid, max, res = args[1], args[2], args[3], num(args[4]), args[5] or ''
	local cur
	if res == '' then
		cur = redis.call('HGET', keys[2], 'owner')
	else
		cur = direct_owner(redis.call('HGET', keys[2], res))
	end
	if cur ~= owner then
		return 0
	end
	if op == '0' then
		redis.call('DEL', keys[1])
	elseif op == '-' then
		redis.call('SREM', keys[1], jid)
	elseif op == '+' then
		if redis.call('SISMEMBER', keys[1], jid) == 0 and redis.call('SCARD', keys[1]) >= max then
			return err('EDQUOT too many directed-presence recipients')
		end
		redis.call('SADD', keys[1], jid)
	else
		return err('EINVAL unknown directed-presence operation')
	end
	return 1
end

---------------------------------------------------------------- administration

-- KEYS dir; read-only. The account's sessions for tetherctl: per directory
-- entry {resource, sid, owner, attached, since ms, expires ms, queued, now ms}.
local function sessions(keys)
	local base, all, out, now = string.sub(keys[1], 1, -4), redis.call('HGETALL', keys[1]), {}, now_ms()
	for i = 1, #all, 2 do
		local sid = string.match(all[i + 1], '^([^|]*)')
		local r = redis.call('HMGET', base .. 's:' .. sid, 'owner', 'att', 'since', 'exp', 'out', 'acked')
		if r[1] then
			out[#out + 1] = { all[i], sid, r[1], tonumber(r[2]), tonumber(r[3] or '0'),
				tonumber(r[4]), (tonumber(r[5]) - tonumber(r[6])) % TWO32, now }
		end
	end
	return out
end

---------------------------------------------------------------- TLS tickets

-- KEYS tickets; ARGV three new keys (sealed by the caller: Redis sees no
-- key in the clear), the rotation period in ms. The cluster's ring of TLS
-- session ticket keys {next, current, previous}: made from the new keys
-- when there is none; rotated (previous = current, current = next, next =
-- the first new key) once the period has passed since the last rotation,
-- by whichever node asks first. Returns the ring.
local function tickets(keys, args)
	local now = now_ms()
	local t = redis.call('HMGET', keys[1], 'next', 'cur', 'prev', 'at')
	if not t[1] or not t[2] or not t[3] or not t[4] then
		redis.call('HSET', keys[1], 'next', args[1], 'cur', args[2], 'prev', args[3], 'at', now)
		return { args[1], args[2], args[3] }
	end
	if now - tonumber(t[4]) >= num(args[4]) then
		redis.call('HSET', keys[1], 'next', args[1], 'cur', t[1], 'prev', t[2], 'at', now)
		return { args[1], t[1], t[2] }
	end
	return { t[1], t[2], t[3] }
end

---------------------------------------------------------------- FAST

-- KEYS fast; ARGV ua. {version, slots}; {0, false} when there is none.
local function fast_get(keys, args)
	local e = redis.call('HMGET', keys[1], 'v:' .. args[1], 'b:' .. args[1])
	if not e[1] then
		return { 0, false }
	end
	return { tonumber(e[1]), e[2] }
end

-- Bounds the entries of account <fast> (called after a write to <keep>'s
-- entry, "" when it was deleted): entries whose last token expired before
-- <now> go, then while more than <max> are left (0: no cap; <keep> counts
-- and is never chosen), the least recently written (lowest version: one
-- counter per account). An entry without "e:" (none is written so) is
-- never swept, only evicted. Returns how many the cap evicted. The hash
-- holds 3 fields per entry, so HGETALL costs what the cap allows.
local function fast_trim(fast, keep, now, max)
	local h = redis.call('HGETALL', fast)
	local ver, exp = {}, {}
	for i = 1, #h, 2 do
		local f, v = h[i], h[i + 1]
		local kind, ua = string.sub(f, 1, 2), string.sub(f, 3)
		if kind == 'v:' and ua ~= keep then
			ver[ua] = tonumber(v)
		elseif kind == 'e:' then
			exp[ua] = tonumber(v)
		end
	end
	local n = (keep ~= '') and 1 or 0
	for ua, _ in pairs(ver) do
		if exp[ua] and exp[ua] <= now then
			redis.call('HDEL', fast, 'v:' .. ua, 'b:' .. ua, 'e:' .. ua)
			ver[ua] = nil
		else
			n = n + 1
		end
	end
	local evicted = 0
	while max > 0 and n > max do
		local oldest
		for ua, v in pairs(ver) do
			if not oldest or v < ver[oldest] then
				oldest = ua
			end
		end
		if not oldest then
			break
		end
		redis.call('HDEL', fast, 'v:' .. oldest, 'b:' .. oldest, 'e:' .. oldest)
		ver[oldest] = nil
		n, evicted = n - 1, evicted + 1
	end
	return evicted
end

-- KEYS fast; ARGV ua, expected version (0: none yet), slots ("" deletes),
-- ttl_ms (until the entry's last token expires), max entries per account
-- (0: no cap). Writes only if the entry's version is still the expected
-- one, with a version never given before for this account; then sweeps the
-- account's expired entries and, if the write made a new entry, evicts the
-- least recently written beyond <max> (fast_trim). Returns {new version (0
-- after a delete), entries evicted by the cap}, or "ESTALE <current
-- version>".
local function fast_cas(keys, args)
	local ua, want, slots = args[1], num(args[2]), args[3]
	local ttl, max = num(args[4]), num(args[5])
	local cur = tonumber(redis.call('HGET', keys[1], 'v:' .. ua) or '0')
	if cur ~= want then
		return err('ESTALE ' .. cur)
	end
	local now = now_ms()
	if slots == '' then
		redis.call('HDEL', keys[1], 'v:' .. ua, 'b:' .. ua, 'e:' .. ua)
		fast_trim(keys[1], '', now, 0)
		return { 0, 0 }
	end
	local v = redis.call('HINCRBY', keys[1], 'v', 1)
	redis.call('HSET', keys[1], 'v:' .. ua, v, 'b:' .. ua, slots, 'e:' .. ua, now + ttl)
	return { v, fast_trim(keys[1], ua, now, cur == 0 and max or 0) }
end

---------------------------------------------------------------- node leases

-- KEYS lease; ARGV holder, ttl_ms. Takes a free lease or renews our own.
-- 1, or "EBUSY <holder> <pttl>". <holder> should name the node AND its
-- incarnation (a restarted node is not its former self).
local function lease_acquire(keys, args)
	local holder, ttl = args[1], num(args[2])
	if redis.call('SET', keys[1], holder, 'NX', 'PX', ttl) then
		return 1
	end
	local cur = redis.call('GET', keys[1])
	if cur == holder then
		redis.call('PEXPIRE', keys[1], ttl)
		return 1
	end
	return err('EBUSY ' .. tostring(cur) .. ' ' .. redis.call('PTTL', keys[1]))
end

-- KEYS lease; ARGV holder, ttl_ms. Renews only if still ours: 1, or
-- "ESTALE <holder>" (lost: expired or taken; stop acting as holder).
local function lease_renew(keys, args)
	local holder, ttl = args[1], num(args[2])
	local cur = redis.call('GET', keys[1])
	if cur ~= holder then
		return err('ESTALE ' .. tostring(cur))
	end
	redis.call('PEXPIRE', keys[1], ttl)
	return 1
end

-- KEYS lease; ARGV holder. Releases only if ours: 1, or 0.
local function lease_release(keys, args)
	if redis.call('GET', keys[1]) ~= args[1] then
		return 0
	end
	redis.call('DEL', keys[1])
	return 1
end

---------------------------------------------------------------- dead nodes' inboxes

-- The value after <name> in the flat name/value array <t>, or nil.
local function field(t, name)
	for i = 1, #t - 1, 2 do
		if t[i] == name then
			return t[i + 1]
		end
	end
	return nil
end

-- Inbox entry <e> ({id, {field, value, ...}}) into <out> if it carries a
-- stanza for a direct session (k 0) of a stream of node incarnation <inc>;
-- an entry of several notices (k INBOX_MANY: 'n', kind, 'to', owner, 'e',
-- entry each, box_write) gives each of its kind 0 for <inc>.
local function inbox_take(out, e, inc)
	local f = e[2]
	if f[1] == 'k' and f[2] == tostring(INBOX_MANY) then
		for i = 3, #f - 5, 6 do
			if f[i + 1] == '0' and string.match(f[i + 3], '^([^/]+)') == inc then
				out[#out + 1] = f[i + 5]
			end
		end
		return
	end
	local to = field(f, 'to')
	if field(f, 'k') == '0' and to and string.match(to, '^([^/]+)') == inc then
		out[#out + 1] = field(f, 'e')
	end
end

-- KEYS inbox; ARGV incarnation. A node's reader joins its inbox
-- (redis_inbox.c): its consumer group, named after the incarnation, made
-- at the stream's end (and the stream if there is none), and its consumer,
-- so that the group has a consumer seen just now even before the first
-- read and the node's lease (inbox_abandoned). 1.
local function inbox_join(keys, args)
	local r = redis.pcall('XGROUP', 'CREATE', keys[1], args[1], '$', 'MKSTREAM')
	if type(r) == 'table' and r.err and not string.match(r.err, '^BUSYGROUP') then
		return r
	end
	redis.call('XGROUP', 'CREATECONSUMER', keys[1], args[1], args[1])
	return 1
end

-- 1 if the group <inc> of inbox <key> belongs to a dead incarnation: its
-- lease is gone, and none of its consumers read for <idle> ms (a node
-- that just started reads before its first lease renewal).
local function inbox_abandoned(key, inc, idle)
	if alive(inc) then
		return false
	end
	for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', key, inc)) do
		if tonumber(field(c, 'idle')) < idle then
			return false
		end
	end
	return true
end

-- KEYS inbox (a node's stream, as SCAN found it); ARGV max entries, idle
-- ms. The reaper's step for the inbox of a dead node incarnation (the
-- consumer group named after it, abandoned: inbox_abandoned):
-- up to <max> of its entries, first those it read and never acknowledged
-- (it may have died before handing them over), then those it never read,
-- are acknowledged, and the stanzas among them for its direct sessions
-- (k 0) returned, to be treated as stanzas for an unavailable resource
-- (RFC 6121 8.5.3). Other kinds are dropped: notices about XEP-0198
-- sessions, whose queues hold their stanzas. A group with nothing left is
-- destroyed; a stream with no group left whose node holds no lease is
-- deleted. Returns {more (1: call again), {entry, ...}, inbox} with the
-- entries as queued ("0:<stamp>:<meta><payload>"), or 0 (no such stream).
-- One dead group per call. The lease key has the stream's tag: one slot.
local function inbox_reap(keys, args)
	local key, max, idle = keys[1], num(args[1]), num(args[2])
	if redis.call('EXISTS', key) == 0 then
		return 0
	end
	local out, groups = {}, redis.call('XINFO', 'GROUPS', key)
	for _, g in ipairs(groups) do
		local inc = field(g, 'name')
		if inbox_abandoned(key, inc, idle) then
			local p = redis.call('XPENDING', key, inc, '-', '+', max)
			for _, x in ipairs(p) do
				local e = redis.call('XRANGE', key, x[1], x[1])[1]
				if e then -- else trimmed (MAXLEN) since
					inbox_take(out, e, inc)
				end
				redis.call('XACK', key, inc, x[1])
			end
			local u = {}
			if #p < max then
				u = redis.call('XRANGE', key, '(' .. field(g, 'last-delivered-id'), '+',
					'COUNT', max - #p)
				for _, e in ipairs(u) do
					inbox_take(out, e, inc)
				end
				if #u > 0 then
					redis.call('XGROUP', 'SETID', key, inc, u[#u][1])
				end
			end
			if #p + #u == 0 then
				redis.call('XGROUP', 'DESTROY', key, inc)
			end
			return { 1, out, key }
		end
	end
	if #groups == 0 and not redis.call('GET', string.sub(key, 1, -3) .. 'lease') then
		redis.call('DEL', key)
	end
	return { 0, out, key }
end

---------------------------------------------------------------- IM data

--[[
Rosters, subscription states, pending requests, offline messages and
blocklists (include/tether/store_im.h; the memory backend: store/memory_im.c,
whose semantics these functions repeat step for step).

  t:{B}:roster  hash   "v" = roster version (XEP-0237; absent: 0), "n" = the
                       last item ordinal given, "nv" = visible items,
                       "i:<jid>" = one item, cmsgpack of {ordinal, state
                       (enum sub_state), visible (0/1), name or false,
                       pending request or false, {groups}}. Items read back
                       in ordinal order: as the roster was built.
  t:{B}:off     list   offline messages, oldest first: server/offline.c's
                       records, opaque but to im_off_move, which reads the
                       sender and the id and type from them
  t:{B}:block   zset   XEP-0191 blocklist: member = JID, score = order added

A subscription stanza changes the user's AND the contact's roster in one
step (store_im.h; RFC 6121 Appendix A: the user's outbound step and the
contact's inbound one), and tether_im_remove cancels both ways (§2.5.2). So
tether_im_sub and tether_im_remove take keys of TWO accounts, two hash tags:
fine on one Redis, refused by Redis Cluster (CROSSSLOT), like tether_deliver.
Under Cluster the pair would have to become two calls on one slot each (the
user's step, then the contact's, replayed idempotently from a per-account
log until acknowledged), and the rosters could disagree in between; one
atomic function keeps them consistent and needs no recovery path.
]]

local TO, FROM, PO, PI = 1, 2, 4, 8
-- enum sub_state -> its facts, as server/sub.c
local SBITS = { [0] = 0, PO, PI, PO + PI, TO, TO + PI, FROM, FROM + PO, TO + FROM }
local SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBED, UNSUBSCRIBED = 0, 1, 2, 3

local function has(s, f)
	return bit.band(SBITS[s], f) ~= 0
end

local function state_of(b)
	for s = 0, 8 do
		if SBITS[s] == b then
			return s
		end
	end
	return 0
end

-- RFC 6121 A.2 (sub_outbound): next state, deliver.
local function outbound(s, t)
	local b = SBITS[s]
	if t == SUBSCRIBE then
		return has(s, TO) and s or state_of(bit.bor(b, PO)), true
	elseif t == UNSUBSCRIBE then
		return state_of(bit.band(b, bit.bnot(TO + PO))), true
	elseif t == SUBSCRIBED then
		if has(s, PI) then
			return state_of(bit.bor(bit.band(b, bit.bnot(PI)), FROM)), true
		end
		return s, false
	elseif t == UNSUBSCRIBED then
		if has(s, FROM + PI) then
			return state_of(bit.band(b, bit.bnot(FROM + PI))), true
		end
		return s, false
	end
	return s, false
end

-- RFC 6121 A.3 (sub_inbound): next state, deliver, auto-subscribed.
local function inbound(s, t)
	local b = SBITS[s]
	if t == SUBSCRIBE then
		if has(s, FROM) then
			return s, false, true
		end
		if has(s, PI) then
			return s, false, false
		end
		return state_of(bit.bor(b, PI)), true, false
	elseif t == UNSUBSCRIBE then
		if has(s, FROM + PI) then
			return state_of(bit.band(b, bit.bnot(FROM + PI))), true, false
		end
	elseif t == SUBSCRIBED then
		if has(s, PO) then
			return state_of(bit.bor(bit.band(b, bit.bnot(PO)), TO)), true, false
		end
	elseif t == UNSUBSCRIBED then
		if has(s, TO + PO) then
			return state_of(bit.band(b, bit.bnot(TO + PO))), true, false
		end
	end
	return s, false, false
end

-- What a client sees of a state: subscription attribute and ask.
local function shown(s)
	return bit.band(SBITS[s], TO + FROM + PO)
end

-- The item <jid> of roster <rk>, or nil. <it>.was_vis remembers the
-- visibility it was read with (for the visible count).
local function item_load(rk, jid)
	local v = redis.call('HGET', rk, 'i:' .. jid)
	if not v then
		return nil
	end
	local t = cmsgpack.unpack(v)
	return { ord = t[1], state = t[2], vis = t[3], name = t[4], pending = t[5],
		groups = t[6] or {}, was_vis = t[3] }
end

local function item_new()
	return { state = 0, vis = 0, name = false, pending = false, groups = {}, was_vis = 0 }
end

-- Writes <it> as item <jid> of <rk>; an item nobody sees and nothing links
-- (hidden, None) is removed instead (memory_im.c's collect). <it> nil:
-- removed. <was_vis>: its visibility before (0 for a new one).
local function item_save(rk, jid, it, was_vis)
	if it and it.vis == 0 and it.state == 0 then
		it = nil
	end
	if it then
		if not it.ord then
			it.ord = redis.call('HINCRBY', rk, 'n', 1)
		end
		redis.call('HSET', rk, 'i:' .. jid, cmsgpack.pack({ it.ord, it.state, it.vis,
			it.name or false, it.pending or false, it.groups }))
	else
		redis.call('HDEL', rk, 'i:' .. jid)
	end
	local dv = (it and it.vis or 0) - was_vis
	if dv ~= 0 then
		redis.call('HINCRBY', rk, 'nv', dv)
	end
	return it
end

local function set_state(it, s)
	it.state = s
	if not has(s, PI) then
		it.pending = false
	end
end

-- An item as C reads it: {jid, state, visible, name, pending, {groups}}.
local function item_reply(jid, it)
	return { jid, it.state, it.vis, it.name or false, it.pending or false, it.groups }
end

local function visible(rk)
	return tonumber(redis.call('HGET', rk, 'nv') or '0')
end

local function version(rk)
	return tonumber(redis.call('HGET', rk, 'v') or '0')
end

-- What the change of item <jid> (visible <was_vis>, state <was> before; <now>
-- after, nil if gone) did for the user: {pushed, removed, version, item or
-- false}, the version bumped when pushed (memory_im.c's change_finish).
local function change(rk, jid, was_vis, was, now)
	local vis = now ~= nil and now.vis == 1
	if was_vis and not vis then
		return { 1, 1, redis.call('HINCRBY', rk, 'v', 1), { jid, was, 0, false, false, {} } }
	end
	if vis and (not was_vis or shown(was) ~= shown(now.state)) then
		return { 1, 0, redis.call('HINCRBY', rk, 'v', 1), item_reply(jid, now) }
	end
	return { 0, 0, version(rk), false }
end

local NO_CHANGE = { 0, 0, 0, false }

-- KEYS roster; ARGV "1" for contacts only (no names or groups). Read-only.
-- {version, {item, ...}} with every item, hidden ones too, in the order
-- they were made.
local function im_read(keys, args)
	local lite = args[1] == '1'
	local h, all = redis.call('HGETALL', keys[1]), {}
	for i = 1, #h, 2 do
		if string.sub(h[i], 1, 2) == 'i:' then
			local t = cmsgpack.unpack(h[i + 1])
			local jid = string.sub(h[i], 3)
			if lite then
				all[#all + 1] = { t[1], { jid, t[2], t[3], false, t[5], {} } }
			else
				all[#all + 1] = { t[1], { jid, t[2], t[3], t[4], t[5], t[6] or {} } }
			end
		end
	end
	table.sort(all, function(a, b) return a[1] < b[1] end)
	local out = {}
	for i, e in ipairs(all) do
		out[i] = e[2]
	end
	return { version(keys[1]), out }
end

-- KEYS roster; ARGV jid, max visible items, has name (0/1), name, groups...
-- Creates or updates the item (a new one at None; its state and pending
-- request kept), visible; always pushed with a new version (RFC 6121
-- 2.3.2). A change, or EDQUOT when it would make more than max visible.
local function im_set(keys, args)
	local rk, jid, max = keys[1], args[1], num(args[2])
	local cur = item_load(rk, jid)
	if (not cur or cur.vis == 0) and visible(rk) >= max then
		return err('EDQUOT roster full')
	end
	cur = cur or item_new()
	local was_vis = cur.was_vis
	cur.name = args[3] == '1' and args[4] or false
	cur.groups = {}
	for i = 5, #args do
		cur.groups[#cur.groups + 1] = args[i]
	end
	cur.vis = 1
	item_save(rk, jid, cur, was_vis)
	return { 1, 0, redis.call('HINCRBY', rk, 'v', 1), item_reply(jid, cur) }
end

-- KEYS user's roster [, contact's roster: absent when the item is the user
-- himself]; ARGV user, jid. Drops the item and cancels the subscriptions
-- both ways: the contact's side takes the unsubscribe and unsubscribed it
-- would get (RFC 6121 2.5.2). {user's change, contact's change}, or ENOENT
-- (no such visible item). KEYS[2] is another account's slot (see above).
local function im_remove(keys, args)
	local ur, cr, user, jid = keys[1], keys[2], args[1], args[2]
	local cur = item_load(ur, jid)
	if not cur or cur.vis == 0 then
		return err('ENOENT no such item')
	end
	local old = cur.state
	local uc = { 1, 1, 0, item_reply(jid, cur) }
	item_save(ur, jid, nil, 1)
	uc[3] = redis.call('HINCRBY', ur, 'v', 1)
	local ci = cr and item_load(cr, user)
	if not ci then
		return { uc, NO_CHANGE }
	end
	local was_vis, cwas, st = ci.vis == 1, ci.state, ci.state
	if has(old, TO + PO) then
		st = inbound(st, UNSUBSCRIBE)
	end
	if has(old, FROM + PI) then
		st = inbound(st, UNSUBSCRIBED)
	end
	set_state(ci, st)
	ci = item_save(cr, user, ci, ci.was_vis)
	return { uc, change(cr, user, was_vis, cwas, ci) }
end

-- KEYS user's roster, contact's roster, contact's user record; ARGV user,
-- contact, type (enum sub_type), has stanza (0/1), stanza, max visible
-- items. A subscription stanza of <type> from <user> to <contact>, both
-- sides in this one step (memory_im.c's im_table_sub; RFC 6121 3.1-3.3,
-- Appendix A). Returns {contact exists, out next, out deliver, in next, in
-- deliver, in auto-subscribed, auto-subscribed, user's change, contact's
-- change}, or EDQUOT. KEYS[2] and KEYS[3] are another account's slot.
local function im_sub(keys, args)
	local ur, cr = keys[1], keys[2]
	local user, contact, t, max = args[1], args[2], num(args[3]), num(args[6])
	local stanza = args[4] == '1' and args[5] or false
	local exists = redis.call('EXISTS', keys[3]) == 1
	local ui = item_load(ur, contact)
	local was_vis, was = ui ~= nil and ui.vis == 1, ui and ui.state or 0
	local onext, odel = outbound(was, t)
	-- a request puts the contact in the roster (3.1.2); an approval of a
	-- request the user never put there too (3.1.5)
	local show = t == SUBSCRIBE or (t == SUBSCRIBED and odel)
	if show and not was_vis and visible(ur) >= max then
		return err('EDQUOT roster full')
	end
	if not ui and (show or onext ~= 0) then
		ui = item_new()
	end
	if ui then
		set_state(ui, onext)
		if show then
			ui.vis = 1
		end
	end
	local inext, idel, iauto, auto, cc = 0, false, false, 0, NO_CHANGE
	if odel and exists and user ~= contact then
		local ci = item_load(cr, user)
		local cwas_vis, cwas = ci ~= nil and ci.vis == 1, ci and ci.state or 0
		inext, idel, iauto = inbound(cwas, t)
		if iauto then
			-- 3.1.3: approved already, so the contact's server answers
			-- <subscribed/> and the user's side takes it in
			auto = 1
			if ui then
				set_state(ui, (inbound(ui.state, SUBSCRIBED)))
			end
		else
			if not ci and inext ~= 0 then
				ci = item_new()
			end
			if ci then
				set_state(ci, inext)
				if t == SUBSCRIBE and idel and stanza then
					ci.pending = stanza
				end
				ci = item_save(cr, user, ci, ci.was_vis)
			end
		end
		cc = change(cr, user, cwas_vis, cwas, ci)
	elseif not exists and t == SUBSCRIBE and ui then
		-- 3.1.3: no such account: its server answers unsubscribed
		set_state(ui, (inbound(ui.state, UNSUBSCRIBED)))
	end
	if ui then
		ui = item_save(ur, contact, ui, ui.was_vis)
	end
	local uc = change(ur, contact, was_vis, was, ui)
	local b = function(x) return x and 1 or 0 end
	return { b(exists), onext, b(odel), inext, b(idel), b(iauto), auto, uc, cc }
end

-- KEYS off, user; ARGV message, max. Appends; EDQUOT when max are stored,
-- ENOENT when there is no such account (nothing is kept for nobody).
local function im_off_add(keys, args)
	if redis.call('EXISTS', keys[2]) == 0 then
		return err('ENOENT no such user')
	end
	if redis.call('LLEN', keys[1]) >= num(args[2]) then
		return err('EDQUOT offline storage full')
	end
	return redis.call('RPUSH', keys[1], args[1])
end

-- KEYS off. Every stored message, oldest first, deleted in the same step.
local function im_off_take(keys)
	local all = redis.call('LRANGE', keys[1], 0, -1)
	redis.call('DEL', keys[1])
	return all
end

-- KEYS off, rec, q, block (of the account and its XEP-0198 session);
-- ARGV epoch, the account's bare JID. XEP-0160 for a session with XEP-0198:
-- the offline messages become entries of the session's queue, oldest first,
-- and leave offline storage, in this one step, so that none is ever only in
-- a reply on its way to a node that may die. Each is numbered there (the
-- queue's next seq) and stamped like an append, with the meta a delivery
-- writes (redis_codec.c: kind, from, to, id, type) built from the record
-- (server/offline.c: "<from>\1<id>\1<type>\1<stanza>"); one from a JID the
-- account blocks now (XEP-0191; never its own) is dropped, as is an
-- unreadable record. Owner only: ESTALE, and nothing moved, if <epoch> no
-- longer owns the session. Returns the entries as queued (as sm_take hands
-- them out); the owner learns of them from this reply, and whoever resumes
-- or ends the session finds them in the queue, acknowledged or not.
local function im_off_move(keys, args)
	local r, e = owned(keys[2], num(args[1]), false)
	if not r then
		return e
	end
	local acct, all = args[2], redis.call('LRANGE', keys[1], 0, -1)
	redis.call('DEL', keys[1])
	local out, seq, bytes, now = {}, tonumber(r[5]), 0, now_ms()
	for _, m in ipairs(all) do
		local from, id, ty, stanza = string.match(m, '^([^\1]*)\1([^\1]*)\1([^\1]*)\1(.*)$')
		local own = from and (from == acct or string.sub(from, 1, #acct + 1) == acct .. '/')
		if from and (own or not blocks(keys[4], from)) then
			seq = (seq + 1) % TWO32
			local entry = string.format('%d:%d:0', seq, now) ..
				table.concat({ from, acct, id, ty, stanza }, '\0')
			redis.call('RPUSH', keys[3], entry)
			bytes = bytes + #entry
			out[#out + 1] = entry
		end
	end
	if #out > 0 then
		redis.call('HSET', keys[2], 'out', seq)
		redis.call('HINCRBY', keys[2], 'qb', bytes)
	end
	return out
end

-- KEYS off; ARGV messages, oldest first. Puts back in front what a take
-- nobody used took (its stream went away before the reply).
local function im_off_restore(keys, args)
	for i = #args, 1, -1 do
		redis.call('LPUSH', keys[1], args[i])
	end
	return #args
end

-- KEYS block; read-only. The blocked JIDs, in the order they were added.
local function im_blocks(keys)
	return redis.call('ZRANGE', keys[1], 0, -1)
end

-- KEYS block; ARGV op ("add", "remove", "clear"), max, jids... Already
-- there / not there: no error. EDQUOT (nothing changed) when the list would
-- hold more than max.
local function im_block(keys, args)
	local bk, op, max = keys[1], args[1], num(args[2])
	if op == 'clear' then
		redis.call('DEL', bk)
	elseif op == 'remove' then
		for i = 3, #args do
			redis.call('ZREM', bk, args[i])
		end
	elseif op == 'add' then
		local n, fresh, seen = redis.call('ZCARD', bk), {}, {}
		for i = 3, #args do
			local j = args[i]
			if not seen[j] and not redis.call('ZSCORE', bk, j) then
				seen[j] = true
				n = n + 1
				if n > max then
					return err('EDQUOT blocklist full')
				end
				fresh[#fresh + 1] = j
			end
		end
		local last = redis.call('ZRANGE', bk, -1, -1, 'WITHSCORES')
		local top = tonumber(last[2] or '0')
		for i, j in ipairs(fresh) do
			redis.call('ZADD', bk, top + i, j)
		end
	else
		return err('EINVAL unknown blocklist operation')
	end
	return 1
end

---------------------------------------------------------------- registry

local RO = { 'no-writes' }
local function reg(name, fn, flags)
	redis.register_function{ function_name = 'tether_' .. name, callback = fn, flags = flags or {} }
end

reg('user_get', user_get, RO)
reg('user_put', user_put)
reg('user_del', user_del)
reg('sm_create', sm_create)
reg('sm_append', sm_append)
reg('sm_ack', sm_ack)
reg('sm_update', sm_update)
reg('sm_take', sm_take)
reg('sm_release', sm_release)
reg('sm_destroy', sm_destroy)
reg('sm_reap', sm_reap)
reg('dir_reap', dir_reap)
reg('sm_get', sm_get, RO)
reg('sm_set_isr', sm_set_isr)
reg('sm_isr_get', sm_isr_get, RO)
reg('sm_isr_burn', sm_isr_burn)
reg('dir_get', dir_get, RO)
reg('deliver', deliver)
reg('deliver_many', deliver_many)
reg('direct_set', direct_set)
reg('direct_update', direct_update)
reg('direct_del', direct_del)
reg('dpres', dpres)
reg('tickets', tickets)
reg('sessions', sessions, RO)
reg('fast_get', fast_get, RO)
reg('fast_cas', fast_cas)
reg('lease_acquire', lease_acquire)
reg('lease_renew', lease_renew)
reg('lease_release', lease_release)
reg('inbox_join', inbox_join)
reg('inbox_reap', inbox_reap)
reg('im_read', im_read, RO)
reg('im_set', im_set)
reg('im_remove', im_remove)
reg('im_sub', im_sub)
reg('im_off_add', im_off_add)
reg('im_off_take', im_off_take)
reg('im_off_restore', im_off_restore)
reg('im_off_move', im_off_move)
reg('im_blocks', im_blocks, RO)
reg('im_block', im_block)
