/**
 * The connection to a Herald node: authentication, reconnects, resume by offset,
 * acks and liveness. Herald's protocol can recover every message across a reconnect,
 * a drain or a failover, but only if the client remembers offsets, resubscribes with
 * `since`, drops duplicates and acks in order; this class does that once, for every
 * application.
 */

import { Emitter, report } from "./emitter.js";
import { HeraldError } from "./errors.js";
import { compareOffsets, isOffset } from "./offset.js";
import { backoffDefaults, closeAction, delayFor, type BackoffOptions, type CloseAction } from "./policy.js";
import { Subscription, type AckMode, type Publication, type SubscribeOptions, type TagCondition } from "./subscription.js";

/** The part of the WebSocket API the SDK uses (browsers, Node 22+, or the `ws` package). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
}

/** A WebSocket constructor. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Options of `HeraldClient`. */
export interface ClientOptions {
  /** The node's WebSocket endpoint, e.g. `wss://push.example.com/ws/notifications/`. */
  url: string;
  /** A token for every connection. Prefer `getToken` for short-lived tokens. */
  token?: string;
  /** Called before every connection attempt; a fresh token replaces an expired one. */
  getToken?: () => string | Promise<string>;
  /**
   * `"message"` (default): connect with `?auth=message` and send the token as the first
   * frame, so it never appears in a URL and a refusal has a code. `"query"`: the legacy
   * `?token=` form, for nodes without first-message auth (or anonymous connections).
   */
  auth?: "message" | "query";
  /** The WebSocket implementation (default: the global `WebSocket`; pass `ws` on Node 20). */
  WebSocket?: WebSocketConstructor;
  /** Reconnect timing. */
  backoff?: BackoffOptions;
  /** A connection that lived this long resets the backoff (default 5000 ms). */
  stableMs?: number;
  /** Application-level ping period (default 20000 ms). */
  pingIntervalMs?: number;
  /** Reconnect when nothing arrives this long after a ping (default 10000 ms). */
  pongTimeoutMs?: number;
  /** Give up on an attempt not authenticated within this time (default 15000 ms). */
  connectTimeoutMs?: number;
  /** Acks are coalesced (an ack covers every earlier offset) and sent at most this often per channel (default 200 ms). */
  ackIntervalMs?: number;
  /** Resubscribe with `since` after a reconnect also on channels the server joined at connect (default true). */
  resume?: boolean;
  /** Channels per `subscribe` frame (the node's HERALD_MAX_SUBSCRIPTIONS, default 64). */
  maxChannelsPerSubscribe?: number;
  /** Random source in [0, 1) for jitter (tests pass their own). */
  random?: () => number;
}

/** Connection states. */
export type ClientState = "idle" | "connecting" | "connected" | "closed";

/** Events of a `HeraldClient`. */
export interface ClientEvents {
  /** An attempt starts (`attempt` 0 is the first after a working connection). */
  connecting: { attempt: number };
  /** Authenticated; subscriptions are being restored. */
  connected: { userId?: string };
  /** A connection ended; `delayMs` is the wait before the next attempt (absent when stopping). */
  disconnected: { code: number; reason: string; delayMs?: number };
  /** The client stopped for good: `disconnect()` (no error) or a refusal (the error). */
  closed: { error?: HeraldError };
  /** Every server `error` frame, every refusal and every local failure. */
  error: HeraldError;
  /** Every push, after dedupe (including channels without a `Subscription`). */
  publication: Publication;
  /** The server confirmed a channel (see `Subscription`'s `subscribed`). */
  subscribed: { channel: string; recovered?: boolean };
}

/** Close code the SDK uses for the connections it gives up on itself. */
export const CLIENT_TIMEOUT = 4000;

type Frame = Record<string, unknown>;

/** The node's channel-name rule (herald-contract's `channel_name`). */
const CHANNEL = /^[A-Za-z0-9_.:@-]{1,128}$/;

export class HeraldClient extends Emitter<ClientEvents> {
  /** Where the connection is. */
  state: ClientState = "idle";
  /** The user id the server confirmed (first-message auth only). */
  userId?: string;

  private o: ClientOptions;
  private b: Required<BackoffOptions>;
  private WS: WebSocketConstructor;
  private ws?: WebSocketLike;
  /** Bumped by every new attempt and by `disconnect()`: stale callbacks compare it. */
  private gen = 0;
  private attempt = 0;
  private openedAt = 0;
  private authed = false;
  private timers: Record<string, ReturnType<typeof setTimeout> | undefined> = {};
  /** The last refusal (`close:code`) that ended an attempt, to stop on a repeat. */
  private refusal?: string;
  /** The last `error` frame of the current attempt, reported with its close. */
  private lastError?: HeraldError;
  private subs = new Map<string, Subscription<any>>();
  /** Newest offset delivered to the application, per channel. */
  private offsets = new Map<string, string>();
  /** Channels the application left: not resumed. */
  private left = new Set<string>();
  /** Auto-ack bookkeeping: delivered offsets in order, with whether their handlers finished. */
  private pending = new Map<string, { offset: string; done: boolean }[]>();
  /** Newest offset acked (or to ack), per channel. */
  private acked = new Map<string, string>();
  private unsentAcks = new Map<string, string>();
  private unsentSubs = new Set<string>();
  /** Channels known to be joined on the current connection (an ack on another is an error). */
  private joined = new Set<string>();

  constructor(options: ClientOptions) {
    super();
    if (!options || typeof options.url !== "string" || !options.url) {
      throw new TypeError("HeraldClient: `url` must be the node's WebSocket URL");
    }
    if (options.token !== undefined && (typeof options.token !== "string" || !options.token)) {
      throw new TypeError("HeraldClient: `token` must be a non-empty string");
    }
    if (options.getToken !== undefined && typeof options.getToken !== "function") {
      throw new TypeError("HeraldClient: `getToken` must be a function");
    }
    if ((options.auth || "message") === "message" && !options.token && !options.getToken) {
      throw new TypeError('HeraldClient: give `token` or `getToken` (anonymous connections need `auth: "query"`)');
    }
    if (options.auth !== undefined && options.auth !== "message" && options.auth !== "query") {
      throw new TypeError('HeraldClient: `auth` must be "message" or "query"');
    }
    const WS = options.WebSocket || (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new TypeError("HeraldClient: no global WebSocket (Node.js < 22): pass the `ws` package as the `WebSocket` option");
    }
    this.o = options;
    this.WS = WS;
    this.b = backoffDefaults(options.backoff);
  }

  /** Starts connecting (again, after `disconnect()` or a refusal). */
  connect(): void {
    if (this.state === "connecting" || this.state === "connected") return;
    this.refusal = undefined;
    this.attempt = 0;
    void this.open();
  }

  /** Closes the connection and stops reconnecting. Subscriptions are kept for a later `connect()`. */
  disconnect(): void {
    this.stop();
  }

  /**
   * Subscribes to `channel` (or returns the live subscription to it). Subscriptions
   * made before `connect()` are sent with the first connection, and every one is
   * restored, with `since`, after each reconnect.
   */
  subscribe<T = unknown>(channel: string, options: SubscribeOptions = {}): Subscription<T> {
    if (typeof channel !== "string" || !CHANNEL.test(channel)) {
      throw new TypeError(`subscribe: invalid channel name ${JSON.stringify(channel)}: use 1-128 letters, digits, '_', '-', '.', ':' or '@'`);
    }
    const ack: AckMode = options.ack || "none";
    if (ack !== "none" && ack !== "auto" && ack !== "manual") {
      throw new TypeError('subscribe: `ack` must be "none", "auto" or "manual"');
    }
    if (options.since !== undefined && !isOffset(options.since)) {
      throw new TypeError(`subscribe: \`since\` must be an offset such as "1700000000000-0", got ${JSON.stringify(options.since)}`);
    }
    const types = options.types === undefined ? undefined : [...new Set(options.types)].sort();
    if (types !== undefined && (!types.length || types.length > 16 || types.some((t) => typeof t !== "string" || !t.length))) {
      throw new TypeError("subscribe: `types` must list 1-16 message types (non-empty strings)");
    }
    const tags = tagConditions(options.tags);
    let sub = this.subs.get(channel) as Subscription<T> | undefined;
    if (!sub) {
      sub = new Subscription<T>(this, channel, ack, types, tags);
      this.subs.set(channel, sub);
    } else if (JSON.stringify([sub.types, sub.tags]) !== JSON.stringify([types, tags])) {
      // A new filter: the node replaces it on the next subscribe.
      sub.types = types;
      sub.tags = tags;
      if (sub.state === "subscribed") this.queueSubscribe(channel);
    }
    this.left.delete(channel);
    const known = this.offsets.get(channel);
    if (options.since && (!known || compareOffsets(options.since, known) > 0)) {
      this.offsets.set(channel, options.since);
    }
    if (sub.state !== "subscribed") {
      sub.state = "pending";
      this.queueSubscribe(channel);
    }
    return sub;
  }

  /** The subscription to `channel`, if any. */
  getSubscription(channel: string): Subscription<unknown> | undefined {
    return this.subs.get(channel);
  }

  /** The offset of the newest message of `channel` delivered to the application. */
  lastOffset(channel: string): string | undefined {
    return this.offsets.get(channel);
  }

  /** @internal `Subscription.unsubscribe()`. */
  unsubscribe(sub: Subscription<any>): void {
    if (this.subs.get(sub.channel) !== sub) return;
    this.subs.delete(sub.channel);
    this.left.add(sub.channel);
    this.joined.delete(sub.channel);
    this.unsentAcks.delete(sub.channel);
    this.unsentSubs.delete(sub.channel);
    sub.state = "unsubscribed";
    if (this.authed) this.send({ type: "unsubscribe", channels: [sub.channel] });
    sub.fire("unsubscribed", {});
  }

  // ---- connecting ----

  private async open(): Promise<void> {
    const gen = ++this.gen;
    this.state = "connecting";
    this.authed = false;
    this.lastError = undefined;
    this.joined.clear();
    this.emit("connecting", { attempt: this.attempt });
    // Counted from here, so a getToken() that never settles is given up on too.
    this.timer("connect", this.o.connectTimeoutMs ?? 15000, () => this.drop(gen, "connect timeout"));
    let token: string | undefined = this.o.token;
    if (this.o.getToken) {
      try {
        token = await this.o.getToken();
      } catch (cause) {
        if (gen !== this.gen) return;
        this.fail(new HeraldError("token_unavailable", "getToken() failed", { cause }));
        return this.retry(gen, 0, "getToken failed", "backoff");
      }
      if (gen !== this.gen) return;
      if (typeof token !== "string" || !token) {
        return this.stop(new HeraldError("bad_token", `getToken() must return a non-empty string, got ${JSON.stringify(token)}`));
      }
    }
    let ws: WebSocketLike;
    try {
      const base = (globalThis as { location?: { href: string } }).location?.href;
      const url = new URL(this.o.url, base);
      url.protocol = url.protocol.replace(/^http/, "ws");
      if (this.o.auth === "query") {
        if (token) url.searchParams.set("token", token);
      } else {
        url.searchParams.set("auth", "message");
      }
      ws = new this.WS(url.toString());
    } catch (cause) {
      return this.stop(new HeraldError("bad_url", `cannot open ${JSON.stringify(this.o.url)}: ${String(cause)}`, { cause }));
    }
    this.ws = ws;
    ws.onopen = () => {
      if (gen !== this.gen) return;
      if (this.o.auth === "query") this.authenticated(gen);
      else this.send({ type: "auth", token });
    };
    ws.onmessage = (event: { data: unknown }) => {
      if (gen === this.gen) this.frame(gen, event.data);
    };
    ws.onclose = (event: { code: number; reason?: string }) => this.closed(gen, event.code, event.reason || "");
    // Browsers follow an error with a close; Node's WebSocket does not after a refused
    // upgrade, so an error not followed by a close soon counts as an abnormal close.
    ws.onerror = () => this.timer("error", 100, () => this.drop(gen, "connection error", 1006));
  }

  private authenticated(gen: number, userId?: string): void {
    this.authed = true;
    this.state = "connected";
    this.userId = userId;
    this.openedAt = Date.now();
    this.refusal = undefined;
    this.clear("connect");
    this.ping(gen);
    this.emit("connected", { userId });
    // Restore every subscription, resuming after the newest offset delivered.
    for (const [channel, sub] of this.subs) if (sub.state !== "refused") this.unsentSubs.add(channel);
    if (this.o.resume !== false) {
      for (const channel of this.offsets.keys()) if (!this.left.has(channel)) this.unsentSubs.add(channel);
    }
    for (const sub of this.subs.values()) if (sub.state === "subscribed") sub.state = "pending";
    this.flushSubscribes();
  }

  private ping(gen: number): void {
    this.timer("ping", this.o.pingIntervalMs ?? 20000, () => {
      if (gen !== this.gen) return;
      this.send({ type: "ping" });
      if (!this.timers.pong) this.timer("pong", this.o.pongTimeoutMs ?? 10000, () => this.drop(gen, "liveness timeout"));
      this.ping(gen);
    });
  }

  /** Gives up on the current socket without waiting for its close handshake. */
  private drop(gen: number, reason: string, code = CLIENT_TIMEOUT): void {
    if (gen !== this.gen) return;
    this.detach(CLIENT_TIMEOUT, reason);
    this.closed(gen, code, reason);
  }

  private detach(code: number, reason: string): void {
    const ws = this.ws;
    this.ws = undefined;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {}; // the ws package throws on an error nobody listens to
    try {
      ws.close(code, reason);
    } catch {
      // Already closing.
    }
  }

  private closed(gen: number, code: number, reason: string): void {
    if (gen !== this.gen) return;
    this.ws = undefined;
    this.clearAll();
    const error = this.lastError;
    let action: CloseAction = closeAction(code);
    if (this.authed && Date.now() - this.openedAt >= (this.o.stableMs ?? 5000)) this.attempt = 0;
    else if (action === "immediate" && (this.attempt > 0 || !this.authed)) action = "backoff";
    this.authed = false;
    const why = error ? `${error.code}: ${error.message}` : reason || `closed with ${code}`;
    if (action === "token") {
      const key = `${code}:${error ? error.code : ""}`;
      if (!this.o.getToken) return this.stop(this.refused(code, error, why, "the token was refused and there is no getToken() to fetch another"));
      if (this.refusal === key) return this.stop(this.refused(code, error, why, "a fresh token was refused the same way"));
      this.refusal = key;
      action = "backoff";
    }
    if (action === "stop") return this.stop(this.refused(code, error, why, "refused"));
    this.retry(gen, code, reason, action);
  }

  private refused(code: number, error: HeraldError | undefined, why: string, what: string): HeraldError {
    return new HeraldError(error ? error.code : `closed_${code}`, `${what} (close ${code}, ${why})`, { closeCode: code });
  }

  private retry(gen: number, code: number, reason: string, action: CloseAction): void {
    this.clearAll();
    const delayMs = delayFor(action, this.attempt, this.b, this.o.random || Math.random);
    this.attempt++;
    this.state = "connecting";
    this.emit("disconnected", { code, reason, delayMs });
    this.timer("retry", delayMs, () => {
      if (gen === this.gen) void this.open();
    });
  }

  private stop(error?: HeraldError): void {
    const was = this.state;
    this.gen++;
    this.clearAll();
    this.detach(1000, "client disconnect");
    this.authed = false;
    this.state = "closed";
    if (error) this.fail(error);
    if (was !== "closed" && was !== "idle") this.emit("disconnected", { code: error?.closeCode ?? 1000, reason: error ? error.message : "client disconnect" });
    this.emit("closed", { error });
  }

  // ---- frames ----

  private frame(gen: number, data: unknown): void {
    this.clear("pong");
    if (typeof data !== "string") return;
    let msg: Frame;
    try {
      msg = JSON.parse(data);
    } catch {
      return this.fail(new HeraldError("bad_frame", `the server sent a frame that is not JSON: ${data.slice(0, 100)}`));
    }
    if (!msg || typeof msg !== "object" || Array.isArray(msg)) return;
    const channels = Array.isArray(msg.channels) ? msg.channels.filter((c): c is string => typeof c === "string") : [];
    switch (msg.type) {
      case "auth_success":
        if (this.authed) return;
        return this.authenticated(gen, typeof msg.user_id === "string" ? msg.user_id : undefined);
      case "pong":
        return;
      case "subscription_success": {
        const recovered = (msg.recovered || {}) as Record<string, unknown>;
        for (const channel of channels) {
          const value = recovered[channel];
          const event = typeof value === "boolean" ? { recovered: value } : {};
          this.joined.add(channel);
          const sub = this.subs.get(channel);
          if (sub) {
            sub.state = "subscribed";
            sub.fire("subscribed", event);
          }
          this.emit("subscribed", { channel, ...event });
        }
        return this.flushAcks();
      }
      case "unsubscription_success":
        return;
      case "error": {
        const named = channels.length ? channels : typeof msg.channel === "string" ? [msg.channel] : [];
        const error = new HeraldError(String(msg.code || "error"), String(msg.message || ""), { channels: named });
        if (!this.authed) this.lastError = error;
        const refused = error.code === "forbidden" || error.code === "unknown_channel" || error.code === "too_many_subscriptions";
        for (const channel of named) {
          const sub = this.subs.get(channel);
          if (!sub) continue;
          if (refused && sub.state === "pending") sub.state = "refused";
          sub.fire("error", error);
        }
        return this.fail(error);
      }
      default:
        if (typeof msg.type === "string") this.publication(msg);
    }
  }

  private publication(msg: Frame): void {
    const channel = typeof msg.channel === "string" ? msg.channel : undefined;
    const offset = isOffset(msg.offset) ? msg.offset : undefined;
    if (channel !== undefined) this.joined.add(channel);
    if (channel !== undefined && offset) {
      const last = this.offsets.get(channel);
      if (last && compareOffsets(offset, last) <= 0) {
        // Already delivered. If it was acked, the ack may have been lost with a connection.
        const acked = this.acked.get(channel);
        if (acked && compareOffsets(offset, acked) <= 0) this.queueAck(channel, acked);
        return;
      }
      this.offsets.set(channel, offset);
    }
    const pub: Publication = {
      channel,
      type: msg.type as string,
      data: msg.data,
      id: typeof msg.id === "string" ? msg.id : undefined,
      offset,
      tags: isTags(msg.tags) ? msg.tags : undefined,
      frame: msg,
      ack: () => {
        if (channel !== undefined && offset) this.queueAck(channel, offset);
      },
    };
    this.emit("publication", pub);
    const sub = channel !== undefined ? this.subs.get(channel) : undefined;
    if (!sub) return;
    if (sub.ack !== "auto" || !offset || channel === undefined) {
      sub.fire("publication", pub);
      return;
    }
    const entry = { offset, done: false };
    const list = this.pending.get(channel) || [];
    list.push(entry);
    this.pending.set(channel, list);
    Promise.allSettled(sub.fire("publication", pub, true)).then((results) => {
      for (const result of results) {
        if (result.status === "rejected") {
          const error = new HeraldError("handler_failed", `a publication handler failed on ${JSON.stringify(channel)} at ${offset}; the message is acked anyway`, { channels: [channel], cause: result.reason });
          sub.fire("error", error);
          this.fail(error);
        }
      }
      entry.done = true;
      let upTo: string | undefined;
      while (list[0] && list[0].done) upTo = list.shift()!.offset;
      if (upTo) this.queueAck(channel, upTo);
    });
  }

  // ---- sending ----

  private send(frame: Frame): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  private queueSubscribe(channel: string): void {
    this.unsentSubs.add(channel);
    if (this.authed && this.unsentSubs.size === 1) queueMicrotask(() => this.flushSubscribes());
  }

  private flushSubscribes(): void {
    if (!this.authed || !this.unsentSubs.size) return;
    const all = [...this.unsentSubs];
    this.unsentSubs.clear();
    const size = this.o.maxChannelsPerSubscribe || 64;
    // One subscribe frame carries one filter: group the channels by theirs.
    const groups = new Map<string, string[]>();
    for (const channel of all) {
      const sub = this.subs.get(channel);
      const filter = sub && (sub.types || sub.tags) ? { ...(sub.types ? { types: sub.types } : {}), ...(sub.tags ? { tags: sub.tags } : {}) } : null;
      const key = JSON.stringify(filter);
      groups.set(key, [...(groups.get(key) ?? []), channel]);
    }
    for (const [key, group] of groups) {
      const filter = JSON.parse(key) as Record<string, unknown> | null;
      for (let i = 0; i < group.length; i += size) {
        const channels = group.slice(i, i + size);
        const since: Record<string, string> = {};
        for (const channel of channels) {
          const offset = this.offsets.get(channel);
          if (offset) since[channel] = offset;
        }
        this.send({
          type: "subscribe",
          channels,
          ...(Object.keys(since).length ? { since } : {}),
          ...(filter ? { filter } : {}),
        });
      }
    }
  }

  private queueAck(channel: string, offset: string): void {
    const acked = this.acked.get(channel);
    if (!acked || compareOffsets(offset, acked) >= 0) this.acked.set(channel, offset);
    this.unsentAcks.set(channel, this.acked.get(channel)!);
    if (!this.timers.ack) this.timer("ack", this.o.ackIntervalMs ?? 200, () => this.flushAcks());
  }

  private flushAcks(): void {
    this.clear("ack");
    if (!this.authed) return;
    for (const [channel, offset] of this.unsentAcks) {
      if (this.joined.has(channel) && this.send({ type: "ack", channel, offset })) this.unsentAcks.delete(channel);
    }
  }

  // ---- helpers ----

  private fail(error: HeraldError): void {
    this.emit("error", error);
  }

  private timer(name: string, ms: number, fn: () => void): void {
    this.clear(name);
    this.timers[name] = setTimeout(() => {
      this.timers[name] = undefined;
      try {
        fn();
      } catch (error) {
        report(error);
      }
    }, ms);
  }

  private clear(name: string): void {
    clearTimeout(this.timers[name]);
    this.timers[name] = undefined;
  }

  private clearAll(): void {
    for (const name in this.timers) if (name !== "ack") this.clear(name);
  }
}

const TAG_KEY = /^[A-Za-z0-9_.:-]{1,64}$/;

/** `subscribe()`'s `tags` option as protocol conditions (keys and `in` values sorted), or why not. */
function tagConditions(tags: Record<string, string | string[]> | undefined): Record<string, TagCondition> | undefined {
  if (tags === undefined) return undefined;
  const bad = () => new TypeError("subscribe: `tags` must map 1-8 keys (1-64 of A-Z a-z 0-9 _ . : -) to a string or an array of 1-32 strings");
  if (tags === null || typeof tags !== "object" || Array.isArray(tags)) throw bad();
  const keys = Object.keys(tags).sort();
  if (!keys.length || keys.length > 8 || keys.some((k) => !TAG_KEY.test(k))) throw bad();
  const out: Record<string, TagCondition> = {};
  for (const key of keys) {
    const value = tags[key];
    if (typeof value === "string") {
      out[key] = { eq: value };
    } else if (Array.isArray(value) && value.length && value.length <= 32 && value.every((v) => typeof v === "string")) {
      out[key] = { in: [...new Set(value)].sort() };
    } else {
      throw bad();
    }
  }
  return out;
}

/** Whether a frame's `tags` is an object of strings. */
function isTags(value: unknown): value is Record<string, string> {
  return value !== null && typeof value === "object" && !Array.isArray(value) && Object.values(value).every((v) => typeof v === "string");
}
