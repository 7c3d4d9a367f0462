// The SDK against a real herald-node. Started by whoever runs it (the e2e story, or
// by hand), described by environment variables; without them this file fails, it
// never skips:
//   HERALD_WS_URL      ws://127.0.0.1:8080/ws/notifications/
//   HERALD_HTTP_URL    http://127.0.0.1:8080
//   HERALD_API_KEY     the node's API key
//   HERALD_JWT_SECRET  the node's HS256 secret (tokens are minted here)
// Optional:
//   HERALD_AUTH_MODE   "message" (default) or "query" (nodes without first-message auth)
//   HERALD_ACK_CHANNEL a per-user channel with history and ack_required (e.g. "tasks");
//                      when set, the ack story runs too
// The node must serve the default channels (`orders`: per-user, history, auto-subscribe).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHmac, randomUUID } from "node:crypto";
import { HeraldClient } from "../../dist/index.js";

const env = (name) => process.env[name];
const missing = ["HERALD_WS_URL", "HERALD_HTTP_URL", "HERALD_API_KEY", "HERALD_JWT_SECRET"].filter((n) => !env(n));
if (missing.length) {
  throw new Error(`integration tests need a running herald-node: set ${missing.join(", ")} (see the top of ${import.meta.url})`);
}
if (typeof WebSocket !== "function") throw new Error(`Node ${process.version} has no global WebSocket: use Node 22+`);
const WS_URL = env("HERALD_WS_URL");
const HTTP_URL = env("HERALD_HTTP_URL").replace(/\/$/, "");
const MODE = env("HERALD_AUTH_MODE") || "message";
const ACK_CHANNEL = env("HERALD_ACK_CHANNEL");
if (MODE !== "message" && MODE !== "query") throw new Error(`HERALD_AUTH_MODE must be "message" or "query", got ${JSON.stringify(MODE)}`);

/** An HS256 token for `userId` that expires `ttl` seconds from now (negative: already expired). */
function mint(userId, ttl = 600) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part({ user_id: userId, exp: Math.floor(Date.now() / 1000) + ttl })}`;
  return `${body}.${createHmac("sha256", env("HERALD_JWT_SECRET")).update(body).digest("base64url")}`;
}

async function publish(message) {
  const response = await fetch(`${HTTP_URL}/api/v1/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${env("HERALD_API_KEY")}`, "content-type": "application/json" },
    body: JSON.stringify(message),
  });
  const body = await response.json();
  assert.equal(response.status, 200, `publish ${JSON.stringify(message).slice(0, 200)}: ${JSON.stringify(body)}`);
  return body;
}

/** A user id no other test (or earlier run) shares, hostile on purpose. */
const user = (tag) => `CORP\\alice "${tag}" 😀 ${randomUUID()}`;

/** A WebSocket that remembers its instances, so a test can cut the client's connection. */
function tracked() {
  const sockets = [];
  class Tracked extends WebSocket {
    constructor(url) {
      super(url);
      sockets.push(this);
    }
  }
  return { sockets, Tracked };
}

const clients = [];
function client(options) {
  const c = new HeraldClient({
    url: WS_URL,
    auth: MODE,
    backoff: { initialMs: 300, minMs: 100, maxMs: 1000, immediateMs: 100 },
    ...options,
  });
  clients.push(c);
  return c;
}
test.afterEach(() => {
  while (clients.length) clients.pop().disconnect();
});

function next(emitter, event, match = () => true, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${event} within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = emitter.on(event, (value) => {
      if (!match(value)) return;
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
async function until(condition, what, timeoutMs = 10000) {
  const end = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

test("connects, and a hostile user id receives its own pushes with offsets, data intact", async () => {
  const id = user("push");
  const c = client({ token: mint(id) });
  const pubs = [];
  c.on("publication", (p) => p.channel === "orders" && pubs.push(p));
  const connected = next(c, "connected");
  c.connect();
  const { userId } = await connected;
  if (MODE === "message") assert.equal(userId, id, "auth_success names the token's user");
  const data = { order: 'PO "7" \\ CORP\\alice', emoji: "📦", nested: { deep: [1, { two: 2 }] } };
  const { id: messageId } = await publish({ channel: "orders", type: "order_update", users: [id], data });
  await until(() => pubs.length === 1, "the push");
  assert.deepEqual(pubs[0].data, data);
  assert.equal(pubs[0].id, messageId);
  assert.match(pubs[0].offset, /^\d+-\d+$/);
  assert.equal(pubs[0].type, "order_update");
});

test("a cut connection resumes with since: every message exactly once, in order", async () => {
  const id = user("resume");
  const { sockets, Tracked } = tracked();
  const c = client({ getToken: () => mint(id), WebSocket: Tracked, backoff: { initialMs: 1200, minMs: 1000, maxMs: 1200 } });
  const sub = c.subscribe("orders");
  const got = [];
  sub.on("publication", (p) => got.push(p));
  const subscribed = next(sub, "subscribed");
  c.connect();
  await subscribed;
  const sent = [];
  const send = async (i) => sent.push((await publish({ channel: "orders", type: "order_update", users: [id], data: { i } })).id);
  for (let i = 0; i < 5; i++) await send(i);
  await until(() => got.length === 5, "the first five");
  const away = next(c, "disconnected");
  sockets.at(-1).close(); // what a network drop looks like to the SDK
  const { delayMs } = await away;
  assert.ok(delayMs >= 1000, `reconnects after ${delayMs} ms`);
  for (let i = 5; i < 10; i++) await send(i); // published while the client is away
  const resumed = await next(sub, "subscribed", () => true, 10000);
  assert.equal(resumed.recovered, true, "the gap was within the history");
  for (let i = 10; i < 12; i++) await send(i);
  await until(() => got.length >= 12, "all twelve");
  await sleep(300);
  assert.deepEqual(got.map((p) => p.data.i), [...Array(12).keys()], "each once, in order");
  assert.deepEqual(got.map((p) => p.id), sent);
  assert.equal(new Set(got.map((p) => p.offset)).size, 12, "twelve distinct offsets");
  assert.equal(sockets.length, 2);
});

test("an expired token is replaced through getToken() on reconnect", async () => {
  const id = user("expired");
  const tokens = [mint(id, -120), mint(id)]; // older than any leeway, then fresh
  let calls = 0;
  const c = client({ getToken: () => tokens[Math.min(calls++, 1)] });
  const errors = [];
  c.on("error", (e) => errors.push(e));
  const connected = next(c, "connected");
  c.connect();
  await connected;
  assert.equal(calls, 2);
  if (MODE === "message") assert.deepEqual(errors.map((e) => e.code), ["token_expired"], "the refusal is told, with its code");
  const pub = next(c, "publication", (p) => p.channel === "orders");
  await publish({ channel: "orders", type: "order_update", users: [id], data: { ok: 1 } });
  assert.deepEqual((await pub).data, { ok: 1 });
});

test("a refused static token never turns into a tight reconnect loop", async () => {
  const { sockets, Tracked } = tracked();
  const c = client({ token: mint(user("refused"), -120), WebSocket: Tracked });
  if (MODE === "message") {
    const closed = next(c, "closed");
    c.connect();
    const { error } = await closed;
    assert.equal(error.code, "token_expired");
    assert.equal(error.closeCode, 4001);
    await sleep(1000);
    assert.equal(sockets.length, 1, "stopped after the refusal");
  } else {
    // A refused upgrade is indistinguishable from a network failure: it backs off.
    c.connect();
    await sleep(1500);
    assert.notEqual(c.state, "connected");
    assert.ok(sockets.length >= 1 && sockets.length <= 6, `${sockets.length} attempts in 1.5 s`);
  }
});

test("server error frames reach the subscription and the client", async () => {
  const c = client({ token: mint(user("errors")) });
  const sub = c.subscribe("no-such-channel");
  const subError = next(sub, "error");
  const clientError = next(c, "error");
  c.connect();
  const error = await subError;
  assert.equal(error.code, "unknown_channel");
  assert.deepEqual(error.channels, ["no-such-channel"]);
  assert.equal((await clientError).code, "unknown_channel");
  assert.equal(sub.state, "refused");
});

test("app-level pings keep a healthy connection open", async () => {
  const c = client({ token: mint(user("ping")), pingIntervalMs: 200, pongTimeoutMs: 500 });
  const drops = [];
  c.on("disconnected", (d) => drops.push(d));
  c.connect();
  await next(c, "connected");
  await sleep(1500);
  assert.deepEqual(drops, []);
  assert.equal(c.state, "connected");
});

test("acks: what a page acked after its handler resolved is not delivered to the next page", { skip: !ACK_CHANNEL && "HERALD_ACK_CHANNEL is not set" }, async () => {
  const id = user("ack");
  const first = client({ token: mint(id) });
  const sub = first.subscribe(ACK_CHANNEL, { ack: "auto" });
  const handled = [];
  sub.on("publication", async (p) => {
    await sleep(50);
    handled.push(p.data.n);
  });
  const subscribed = next(sub, "subscribed");
  first.connect();
  await subscribed;
  for (let n = 0; n < 3; n++) await publish({ channel: ACK_CHANNEL, type: "task", users: [id], data: { n } });
  await until(() => handled.length === 3, "three handled");
  await sleep(500); // the coalesced ack goes out
  first.disconnect();
  await publish({ channel: ACK_CHANNEL, type: "task", users: [id], data: { n: 3 } });

  const second = client({ token: mint(id) });
  const sub2 = second.subscribe(ACK_CHANNEL, { ack: "manual" });
  const got = [];
  sub2.on("publication", (p) => got.push(p));
  second.connect();
  await until(() => got.length >= 1, "the unacked message");
  await sleep(500);
  assert.deepEqual(got.map((p) => p.data.n), [3], "only what the first page had not acked");
});
