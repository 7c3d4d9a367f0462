// A scripted stand-in for herald-node, for the SDK's unit tests only (the integration
// tests run against the real node). It speaks the browser protocol: first-message auth
// and `?token=`, ping/pong, subscribe with `since` (replaying its in-memory history),
// unsubscribe, acks, and pushes; each test steers it through its fields and hooks and
// reads back every frame the client sent.
import { WebSocketServer } from "ws";

/** One client connection as the fake sees it. */
export class FakeConnection {
  constructor(server, ws, url) {
    this.server = server;
    this.ws = ws;
    this.url = url;
    this.mode = url.searchParams.get("auth") === "message" ? "message" : "query";
    this.authed = this.mode === "query";
    this.frames = [];
    this.channels = new Set();
    this.newest = new Map();
    this.waiters = [];
    this.closed = new Promise((resolve) => ws.on("close", (code) => resolve(code)));
  }

  /** Sends a frame (an object is serialized; a string is sent as is). */
  send(frame) {
    if (this.ws.readyState === 1) this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  close(code, reason = "") {
    this.ws.close(code, reason);
  }

  /** Resolves with the first frame (already received or coming) that `match` accepts. */
  next(match, timeoutMs = 3000) {
    const test = typeof match === "string" ? (f) => f.type === match : match;
    const found = this.frames.find((f) => !f.seen && test(f.frame));
    if (found) {
      found.seen = true;
      return Promise.resolve(found.frame);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${typeof match === "string" ? match : "matching"} frame within ${timeoutMs} ms; got ${JSON.stringify(this.frames.map((f) => f.frame))}`)), timeoutMs);
      this.waiters.push({ test, resolve, timer });
    });
  }

  /** Every frame of `type` received so far. */
  all(type) {
    return this.frames.filter((f) => f.frame.type === type).map((f) => f.frame);
  }

  /** Sends a stored history message, remembering it as sent on this connection. */
  deliver(channel, message) {
    this.newest.set(channel, message.n);
    this.send(message.frame);
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      frame = { type: "<not json>", text };
    }
    const entry = { frame, seen: false };
    this.frames.push(entry);
    const waiter = this.waiters.find((w) => w.test(frame));
    if (waiter) {
      entry.seen = true;
      clearTimeout(waiter.timer);
      this.waiters.splice(this.waiters.indexOf(waiter), 1);
      waiter.resolve(frame);
    }
    this.server.handle(this, frame);
  }
}

export class FakeHerald {
  /** Starts a fake on an ephemeral loopback port. */
  static async start() {
    const server = new FakeHerald();
    await new Promise((resolve) => server.wss.on("listening", resolve));
    return server;
  }

  constructor() {
    /** Decides about a token: `{ userId }` to accept, `{ code, close }` to refuse. */
    this.verify = (token) => (token ? { userId: "42" } : { code: "token_missing", close: 4001 });
    /** Channels joined at connect, as auto-subscribe channels are. */
    this.autoChannels = [];
    /** Whether a `ping` gets a `pong`. */
    this.answerPings = true;
    /** Channels a `subscribe` is refused with `forbidden`. */
    this.forbidden = new Set();
    /** `recovered` reported for a channel subscribed with `since`. */
    this.recovered = () => true;
    /** When set, a `since` replay ignores what the connection was already sent (a duplicating server). */
    this.duplicate = false;
    /** Offline delivery at connect: channel -> "everything" replays its whole history after auth. */
    this.offlineAll = false;
    this.history = new Map();
    this.count = 0;
    this.connections = [];
    this.connectionWaiters = [];
    this.handshakes = [];
    this.wss = new WebSocketServer({
      host: "127.0.0.1",
      port: 0,
      verifyClient: ({ req }, done) => {
        const url = new URL(req.url, "http://fake");
        this.handshakes.push(url);
        if (url.searchParams.get("auth") === "message") return done(true);
        const outcome = this.verify(url.searchParams.get("token"));
        if (outcome.userId === undefined) return done(false, 401, "Unauthorized");
        done(true);
      },
    });
    this.wss.on("connection", (ws, req) => {
      const conn = new FakeConnection(this, ws, new URL(req.url, "http://fake"));
      ws.on("message", (data, binary) => conn.receive(binary ? "<binary>" : data.toString()));
      this.connections.push(conn);
      if (conn.authed) this.opened(conn);
      const waiter = this.connectionWaiters.shift();
      if (waiter) waiter(conn);
    });
  }

  get url() {
    return `ws://127.0.0.1:${this.wss.address().port}/ws/notifications/`;
  }

  /** Resolves with connection number `index` (0-based) once it exists. */
  connection(index, timeoutMs = 3000) {
    if (this.connections[index]) return Promise.resolve(this.connections[index]);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`connection ${index} did not come within ${timeoutMs} ms (have ${this.connections.length})`)), timeoutMs);
      const wait = () => {
        if (this.connections[index]) {
          clearTimeout(timer);
          resolve(this.connections[index]);
        } else this.connectionWaiters.push(wait);
      };
      wait();
    });
  }

  /** Stores a message in `channel`'s history and pushes it to its subscribers. */
  publish(channel, data, type = "order_update") {
    this.count++;
    const n = this.count;
    // Sequence numbers past 9 check that offsets are ordered as numbers, not text.
    const frame = { type, data, channel, id: `id-${n}`, offset: `1700000000000-${n}` };
    const message = { n, frame };
    if (!this.history.has(channel)) this.history.set(channel, []);
    this.history.get(channel).push(message);
    for (const conn of this.connections) {
      if (conn.authed && conn.channels.has(channel) && conn.ws.readyState === 1) conn.deliver(channel, message);
    }
    return frame;
  }

  opened(conn) {
    for (const channel of this.autoChannels) {
      conn.channels.add(channel);
      if (this.offlineAll) for (const message of this.history.get(channel) || []) conn.deliver(channel, message);
    }
  }

  handle(conn, frame) {
    if (!conn.authed) {
      if (frame.type !== "auth" || typeof frame.token !== "string" || !frame.token) {
        conn.send({ type: "error", code: "bad_auth", message: "expected an auth frame" });
        return conn.close(4003, "expected an auth frame");
      }
      const outcome = this.verify(frame.token);
      if (outcome.userId === undefined) {
        conn.send({ type: "error", code: outcome.code, message: `refused: ${outcome.code}` });
        return conn.close(outcome.close, "token refused");
      }
      conn.authed = true;
      conn.send({ type: "auth_success", user_id: outcome.userId });
      return this.opened(conn);
    }
    switch (frame.type) {
      case "auth":
        conn.send({ type: "error", code: "bad_auth", message: "already authenticated" });
        return conn.close(4003, "repeated auth");
      case "ping":
        if (this.answerPings) conn.send({ type: "pong", timestamp: new Date().toISOString() });
        return;
      case "subscribe": {
        const since = frame.since || {};
        const recovered = {};
        const refused = frame.channels.filter((c) => this.forbidden.has(c));
        const granted = frame.channels.filter((c) => !this.forbidden.has(c));
        for (const channel of granted) {
          conn.channels.add(channel);
          if (channel in since) recovered[channel] = this.recovered(channel);
        }
        conn.send({ type: "subscription_success", channels: granted, ...(Object.keys(recovered).length ? { recovered } : {}) });
        if (refused.length) conn.send({ type: "error", code: "forbidden", channels: refused, ...(refused.length === 1 ? { channel: refused[0] } : {}), message: "not allowed" });
        for (const [channel, offset] of Object.entries(since)) {
          if (!granted.includes(channel)) continue;
          const after = Math.max(Number(offset.split("-")[1]), this.duplicate ? 0 : conn.newest.get(channel) || 0);
          for (const message of this.history.get(channel) || []) if (message.n > after) conn.deliver(channel, message);
        }
        return;
      }
      case "unsubscribe":
        for (const channel of frame.channels) conn.channels.delete(channel);
        return conn.send({ type: "unsubscription_success", channels: frame.channels });
      default:
        return;
    }
  }

  async stop() {
    for (const conn of this.connections) conn.ws.terminate();
    await new Promise((resolve) => this.wss.close(resolve));
  }
}
