// Live events: Server-Sent Events read with fetch (so the access token goes in a header, never in
// a URL). The last position seen goes back as Last-Event-ID on every reconnect: nothing is missed.
import { nextSession, refresh, token } from "./session.js";

export class LiveStream {
  constructor(path, onEvent, onState = () => {}) {
    this.path = path; this.onEvent = onEvent; this.onState = onState;
    this.last = null; this.stopped = false; this.controller = null;
  }

  start() { this.loop(); return this; }

  stop() { this.stopped = true; this.controller?.abort(); }

  async loop() {
    let wait = 250;
    while (!this.stopped) {
      try {
        await this.connect();
        wait = 250;
      } catch (e) {
        if (this.stopped) return;
        this.onState("reconnecting");
        if (e.status === 401 && !(await refresh())) {
          this.onState("signed out");
          await nextSession();  // signed in again (over the page): resume from the last position
        }
      }
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 5000);
    }
  }

  async connect() {
    this.controller = new AbortController();
    const headers = { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" };
    if (this.last !== null) headers["Last-Event-ID"] = String(this.last);
    const response = await fetch(this.path, { headers, signal: this.controller.signal, cache: "no-store" });
    if (!response.ok) throw Object.assign(new Error(`stream ${response.status}`), { status: response.status });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;  // the server ended it (token lifetime): reconnect from `last`
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        this.dispatch(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
      }
    }
  }

  dispatch(block) {
    let id = null, type = "message", data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("id: ")) id = Number(line.slice(4));
      else if (line.startsWith("event: ")) type = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    if (id !== null) this.last = id;
    if (type === "ready") this.onState("live");
    else if (type === "reload") this.onEvent({ type: "reload" });
    else if (type === "event") this.onEvent(JSON.parse(data));
  }
}
