// tests/integration/js/patch_open.mjs - harness fix for an xmpp.js 0.14.0 client bug.
//
// Not a server issue: Connection.open() awaits write(header) and only then
// starts waiting for the "open" event. A fast server's reply header can be
// parsed before the write callback runs, so the "open" event is missed and
// the login stalls until the timeout. patchOpen() installs the same function,
// but listening before writing.

export function waitEvent(emitter, event, rejectEvent, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timeout waiting for ${event}`));
    }, ms);
    const onEvent = (v) => {
      cleanup();
      resolve(v);
    };
    const onReject = (e) => {
      cleanup();
      reject(e);
    };
    function cleanup() {
      clearTimeout(timer);
      emitter.removeListener(event, onEvent);
      emitter.removeListener(rejectEvent, onReject);
    }
    emitter.once(event, onEvent);
    emitter.once(rejectEvent, onReject);
  });
}

export function patchOpen(xmpp) {
  xmpp.open = async function open(options) {
    this._status("opening");
    const { domain: d, lang } = options;
    const headerElement = this.headerElement();
    headerElement.attrs.to = d;
    headerElement.attrs["xml:lang"] = lang;
    this.root = headerElement;
    this._attachParser(new this.Parser());
    const opened = waitEvent(this, "open", "error", this.timeout); // listen first
    await this.write(this.header(headerElement));
    return opened;
  };
}
