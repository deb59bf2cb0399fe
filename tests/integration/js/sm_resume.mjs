// sm_resume.mjs - xmpp.js (@xmpp/client 0.14) XEP-0198 driver for tether's
// integration tests (tests/integration/test_sm_xmppjs.py).
//
//   node sm_resume.mjs --port P --domain D --user U --password PW [--resource R]
//                      [--host 127.0.0.1] [--timeout-ms 10000]
//
// Talks JSON lines: every event goes to stdout as one JSON object per line;
// commands come one per line on stdin:
//   kill        drop the TCP connection abruptly (RST: no </stream:stream>,
//               no TLS close_notify); automatic reconnection is off
//   reconnect   connect again; xmpp.js resumes (event "resumed") or, if the
//               server refuses, binds a fresh session (event "online")
//   ack         send <a h/> now;  r  send <r/> now
//   state       print the SM state
//   quit        print {"event":"done",...} with every message received, stop
// Loopback only, every wait bounded; the process exits by itself after
// --max-seconds (default 120).

import net from "node:net";
import process from "node:process";
import readline from "node:readline";

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

const xmpp = client({
  service: `xmpp://${host}:${port}`,
  domain,
  resource: args.resource || "js",
  username: args.user,
  password: args.password,
  timeout: timeoutMs,
});
// Self-signed test certificate: NODE_TLS_REJECT_UNAUTHORIZED=0 comes from the
// test's environment as well; this keeps the script usable without it.
process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";

// xmpp.js 0.14.0 client bug, worked around in the harness (patch_open.mjs):
// it writes its stream header before listening for the reply.
patchOpen(xmpp);
// ---------------------------------------------------------------------------

const sm = xmpp.streamManagement;
const messages = [];
const errors = [];
let rawSocket = null;
let acksIn = 0;
let requestsIn = 0;
let acksOut = 0;
let streamErrors = [];

xmpp.reconnect.stop(); // the test decides when to reconnect

xmpp.on("connect", () => {
  if (xmpp.socket instanceof net.Socket) rawSocket = xmpp.socket;
});
xmpp.on("error", (err) => {
  errors.push(String(err && (err.condition || err.message || err)));
  if (err && err.condition) streamErrors.push(err.condition);
});
xmpp.on("nonza", (el) => {
  if (el.is("a", "urn:xmpp:sm:3")) acksIn++;
  if (el.is("r", "urn:xmpp:sm:3")) requestsIn++;
});
xmpp.on("send", (el) => {
  if (el.is && el.is("a", "urn:xmpp:sm:3")) acksOut++;
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
xmpp.on("disconnect", (info) => {
  out({ event: "disconnect", clean: !!(info && info.clean) });
});

async function command(line) {
  const [cmd, ...rest] = line.trim().split(/\s+/);
  try {
    if (cmd === "kill") {
      const sock = rawSocket;
      if (!sock) throw new Error("no socket");
      const gone = waitEvent(xmpp, "disconnect", "never", timeoutMs);
      // resetAndDestroy() = SO_LINGER 0 + close → RST on the wire
      sock.resetAndDestroy();
      await gone;
      out({ event: "killed", sm: smState() });
    } else if (cmd === "reconnect") {
      const { service, domain: d, lang } = xmpp.options;
      await xmpp.connect(service);
      await xmpp.open({ domain: d, lang });
      out({ event: "reconnected" });
    } else if (cmd === "send") {
      // send TO BODY...
      await xmpp.send(xml("message", { to: rest[0], type: "chat" }, xml("body", {}, rest.slice(1).join(" "))));
      out({ event: "sent" });
    } else if (cmd === "r") {
      await xmpp.send(xml("r", { xmlns: "urn:xmpp:sm:3" }));
      out({ event: "r-sent" });
    } else if (cmd === "ack") {
      await xmpp.send(xml("a", { xmlns: "urn:xmpp:sm:3", h: String(sm.inbound) }));
      out({ event: "ack-sent", h: sm.inbound });
    } else if (cmd === "state") {
      out({
        event: "state",
        status: xmpp.status,
        jid: xmpp.jid && xmpp.jid.toString(),
        sm: smState(),
        messages: messages.length,
        acks_in: acksIn,
        requests_in: requestsIn,
        acks_out: acksOut,
      });
    } else if (cmd === "quit") {
      out({
        event: "done",
        messages,
        errors,
        stream_errors: streamErrors,
        sm: smState(),
        acks_in: acksIn,
        requests_in: requestsIn,
        acks_out: acksOut,
      });
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
