// fast_resume.mjs - xmpp.js (@xmpp/client 0.14) SASL2 + Bind2 + FAST
// (XEP-0484, HT-SHA-256-NONE) + XEP-0198 driver for tether's integration tests
// (tests/integration/test_fast_xmppjs.py).
//
//   node fast_resume.mjs --port P --domain D --user U --password PW
//                        [--tag T] [--ua-id UUID] [--host 127.0.0.1] [--timeout-ms 10000]
//
// JSON lines out (one event per line), commands in (one per line):
//   kill        drop the TCP connection abruptly (RST); reconnection is off
//   reconnect   connect again: xmpp.js authenticates with its FAST token and
//               resumes inline (event "resumed"), or binds afresh ("online")
//   state       print the SM / FAST state
//   quit        print {"event":"done",...} with every message received, stop
// Extra events: "authenticate" (what each SASL2 <authenticate/> carried),
// "sasl2-success" (what each <success/> carried), "token" (a FAST token was
// stored). Loopback only, every wait bounded; exits by itself after
// --max-seconds (default 120).
//
// How FAST is wired in @xmpp/client 0.14.0 (read from node_modules):
// client() builds @xmpp/client-core/src/fast/fast.js and registers
// @xmpp/sasl-ht-sha-256-none (a dependency of @xmpp/client, no extra package
// needed) as its only mechanism. fast.js keeps the token in memory
// (fast.saveToken / fast.fetchToken / fast.deleteToken can be replaced); on a
// login without a usable token it adds <request-token mechanism=.../> to the
// SASL2 <authenticate/>, stores the <token/> of the <success/> (also the
// rotated one after a FAST login), and on the next login tries the token
// first (with <fast/>, plus the inline <resume/> from stream-management and
// Bind2 <bind/>), falling back to the password if the server refuses it.
//
// The credentials handler below replaces createOnAuthenticate's default only
// to fetch the token on EVERY login: the default does
// `credentials.token ??= await fast.fetch()` on one shared object, so after a
// FAST login has rotated the token it would keep offering the old one (an
// xmpp.js 0.14.0 client bug: tether keeps that token valid only until the
// rotated one is used, as XEP-0484 asks, so the client would never move on).

import net from "node:net";
import process from "node:process";
import readline from "node:readline";
import { randomUUID } from "node:crypto";

import { client, xml } from "@xmpp/client";
import { patchOpen, waitEvent } from "./patch_open.mjs";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []),
);
const host = args.host || "127.0.0.1";
const port = Number(args.port);
const domain = args.domain || "localhost";
const timeoutMs = Number(args["timeout-ms"] || 10000);
const maxSeconds = Number(args["max-seconds"] || 120);
if (!["127.0.0.1", "localhost", "::1"].includes(host)) {
  console.error("loopback only");
  process.exit(2);
}

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

setTimeout(() => {
  out({ event: "fatal", error: "max-seconds reached" });
  process.exit(3);
}, maxSeconds * 1000).unref();

const username = args.user;
const password = args.password;
const userAgent = xml("user-agent", { id: args["ua-id"] || randomUUID() }, xml("software", {}, "tether-tests-xmppjs"));

const xmpp = client({
  service: `xmpp://${host}:${port}`,
  domain,
  resource: args.tag || "jsfast", // the Bind2 <tag/>
  username, // sets entity.jid before login; the handler below supplies the secrets
  userAgent,
  credentials: async (authenticate, mechanisms, fast) => {
    const token = fast ? await fast.fetch() : null;
    const mechanism = mechanisms.find((m) => m !== "PLAIN") || mechanisms[0];
    await authenticate({ username, password, token }, mechanism, userAgent);
  },
  timeout: timeoutMs,
});
process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";

// xmpp.js 0.14.0 client bug, worked around in the harness (patch_open.mjs):
// it writes its stream header before listening for the reply.
patchOpen(xmpp);

const sm = xmpp.streamManagement;
const fast = xmpp.fast;
const messages = [];
const errors = [];
const tokens = [];
const authenticates = [];
const successes = [];
let rawSocket = null;
let streamErrors = [];

// Keep the library's in-memory store, but report what it stores.
let stored = null;
fast.saveToken = async (t) => {
  stored = t;
  tokens.push({ mechanism: t.mechanism, expiry: t.expiry, token: t.token });
  out({ event: "token", mechanism: t.mechanism, expiry: t.expiry, token: t.token });
};
fast.fetchToken = async () => stored;
fast.deleteToken = async () => {
  out({ event: "token-deleted" });
  stored = null;
};

xmpp.reconnect.stop(); // the test decides when to reconnect

xmpp.on("connect", () => {
  if (xmpp.socket instanceof net.Socket) rawSocket = xmpp.socket;
});
xmpp.on("error", (err) => {
  errors.push(String(err && (err.condition || err.message || err)));
  if (err && err.condition) streamErrors.push(err.condition);
});
xmpp.on("send", (el) => {
  if (el.is && el.is("authenticate", "urn:xmpp:sasl:2")) {
    const a = {
      mechanism: el.attrs.mechanism,
      fast: !!el.getChild("fast", "urn:xmpp:fast:0"),
      request_token: el.getChild("request-token", "urn:xmpp:fast:0")?.attrs.mechanism || null,
      resume: !!el.getChild("resume", "urn:xmpp:sm:3"),
      bind: !!el.getChild("bind", "urn:xmpp:bind:0"),
      user_agent: el.getChild("user-agent")?.attrs.id || null,
    };
    authenticates.push(a);
    out({ event: "authenticate", ...a });
  }
});
xmpp.on("nonza", (el) => {
  if (el.is("success", "urn:xmpp:sasl:2")) {
    const s = {
      additional_data: !!el.getChild("additional-data"),
      aid: el.getChildText("authorization-identifier"),
      resumed: !!el.getChild("resumed", "urn:xmpp:sm:3"),
      failed: !!el.getChild("failed", "urn:xmpp:sm:3"),
      bound: !!el.getChild("bound", "urn:xmpp:bind:0"),
      token: !!el.getChild("token", "urn:xmpp:fast:0"),
    };
    successes.push(s);
    out({ event: "sasl2-success", ...s });
  } else if (el.is("failure", "urn:xmpp:sasl:2")) {
    out({ event: "sasl2-failure", xml: el.toString() });
  }
});
xmpp.on("stanza", (st) => {
  if (st.is("message") && st.attrs.type !== "error") {
    const body = st.getChildText("body");
    if (body !== null) {
      const delay = st.getChild("delay", "urn:xmpp:delay");
      messages.push({ body, from: st.attrs.from, delay: delay ? delay.attrs.stamp || "" : null });
    }
  }
});

function smState() {
  return {
    enabled: sm.enabled,
    id: sm.id,
    max: sm.max,
    inbound: sm.inbound,
    outbound: sm.outbound,
    outbound_queue: sm.outbound_q.length,
  };
}

xmpp.on("online", (jid) => {
  out({ event: "online", jid: jid.toString(), sm: smState() });
});
sm.on("resumed", () => {
  out({ event: "resumed", jid: xmpp.jid && xmpp.jid.toString(), sm: smState() });
});

function summary() {
  return { messages, errors, stream_errors: streamErrors, sm: smState(), tokens, authenticates, successes };
}

async function command(line) {
  const [cmd] = line.trim().split(/\s+/);
  try {
    if (cmd === "kill") {
      const sock = rawSocket;
      if (!sock) throw new Error("no socket");
      const gone = waitEvent(xmpp, "disconnect", "never", timeoutMs);
      sock.resetAndDestroy(); // SO_LINGER 0 + close: RST on the wire
      await gone;
      out({ event: "killed", sm: smState() });
    } else if (cmd === "reconnect") {
      const { service, domain: d, lang } = xmpp.options;
      await xmpp.connect(service);
      await xmpp.open({ domain: d, lang });
      out({ event: "reconnected" });
    } else if (cmd === "state") {
      out({
        event: "state",
        status: xmpp.status,
        jid: xmpp.jid && xmpp.jid.toString(),
        sm: smState(),
        messages: messages.length,
        tokens: tokens.length,
        fast_mechanism: fast.mechanism,
      });
    } else if (cmd === "quit") {
      out({ event: "done", ...summary() });
      try {
        await Promise.race([xmpp.stop(), new Promise((r) => setTimeout(r, 3000))]);
      } catch {}
      process.exit(0);
    } else {
      out({ event: "error", error: `unknown command ${cmd}` });
    }
  } catch (err) {
    out({ event: "error", command: cmd, error: String(err && (err.message || err)) });
  }
}

const rl = readline.createInterface({ input: process.stdin });
let chain = Promise.resolve();
rl.on("line", (line) => {
  chain = chain.then(() => command(line));
});
rl.on("close", () => {
  chain.then(() => command("quit"));
});

try {
  await xmpp.start();
} catch (err) {
  out({ event: "fatal", error: String(err && (err.message || err)) });
  process.exit(1);
}
