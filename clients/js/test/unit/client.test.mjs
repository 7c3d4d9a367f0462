// The client against the fake node: authentication, the close-code table in action,
// getToken on every attempt, resume with dedupe, acks, liveness and hostile input.
// Runs on Node 22+ (the global WebSocket); `./run-tests.sh` provides one.
import { test, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
// HERALD_JS_BUNDLE=1 runs the same tests on the minified bundle.
const { HeraldClient, HeraldError } = await import(process.env.HERALD_JS_BUNDLE ? "../../dist/herald.min.js" : "../../dist/index.js");
import { FakeHerald } from "./fake-server.mjs";

if (typeof WebSocket !== "function") {
  throw new Error(`Node ${process.version} has no global WebSocket: run the tests with Node 22+ (./run-tests.sh installs one)`);
}

const fast = {
  backoff: { initialMs: 40, maxMs: 200, minMs: 20, immediateMs: 10, longMs: 400 },
  connectTimeoutMs: 2000,
  ackIntervalMs: 10,
};

let server;
let clients;
beforeEach(async () => {
  server = await FakeHerald.start();
  clients = [];
});
afterEach(async () => {
  for (const client of clients) client.disconnect();
  await server.stop();
});

function client(options = {}) {
  const c = new HeraldClient({ url: server.url, token: "tok", ...fast, ...options });
  clients.push(c);
  return c;
}

/** Resolves with the next `event` of `emitter` that `match` accepts. */
function next(emitter, event, match = () => true, timeoutMs = 3000) {
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

/** Collects every `event` of `emitter`. */
function collect(emitter, event) {
  const seen = [];
  emitter.on(event, (value) => seen.push(value));
  return seen;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

test("first-message auth: no token in the URL, the token is the first frame, auth_success connects", async () => {
  const token = 'a.b"c\\d';
  const c = client({ token });
  const connected = next(c, "connected");
  c.connect();
  const conn = await server.connection(0);
  assert.equal(conn.url.searchParams.get("auth"), "message");
  assert.equal(conn.url.searchParams.get("token"), null);
  assert.ok(!conn.url.href.includes("a.b"), conn.url.href);
  assert.deepEqual(await conn.next(() => true), { type: "auth", token });
  assert.deepEqual(await connected, { userId: "42" });
  assert.equal(c.state, "connected");
  assert.equal(c.userId, "42");
});

test("legacy query form: the exact token travels in ?token=", async () => {
  const token = "CORP\\alice \"quoted\" & ünïcode 😀 ?=#";
  const c = client({ token, auth: "query" });
  const connected = next(c, "connected");
  c.connect();
  const conn = await server.connection(0);
  assert.equal(conn.url.searchParams.get("token"), token);
  assert.equal(conn.url.searchParams.get("auth"), null);
  await connected;
  assert.equal(conn.all("auth").length, 0, "no auth frame on a query-token connection");
});

test("getToken() is called before every attempt and its new token is used", async () => {
  let calls = 0;
  const c = client({ token: undefined, getToken: async () => `token-${++calls}` });
  c.connect();
  const first = await server.connection(0);
  assert.equal((await first.next("auth")).token, "token-1");
  await next(c, "connected");
  first.close(1012, "draining");
  const second = await server.connection(1);
  assert.equal((await second.next("auth")).token, "token-2");
  await next(c, "connected");
  assert.equal(calls, 2);
});

test("an expired token is replaced through getToken(), and the refusal is surfaced", async () => {
  server.verify = (token) => (token === "expired" ? { code: "token_expired", close: 4001 } : { userId: "7" });
  const tokens = ["expired", "fresh"];
  const c = client({ token: undefined, getToken: () => tokens.shift() });
  const errors = collect(c, "error");
  const connected = next(c, "connected");
  c.connect();
  assert.deepEqual(await connected, { userId: "7" });
  assert.equal(errors[0].code, "token_expired");
  assert.ok(errors[0] instanceof HeraldError);
  assert.equal(server.connections.length, 2);
});

test("the same token refusal twice in a row stops with a clear error, without a tight loop", async () => {
  server.verify = () => ({ code: "token_invalid_signature", close: 4001 });
  let calls = 0;
  const c = client({ token: undefined, getToken: () => `t${++calls}` });
  const closed = next(c, "closed");
  c.connect();
  const { error } = await closed;
  assert.equal(error.code, "token_invalid_signature");
  assert.equal(error.closeCode, 4001);
  assert.match(error.message, /fresh token was refused/);
  assert.equal(c.state, "closed");
  await sleep(300);
  assert.equal(server.connections.length, 2, "one retry with a fresh token, then stop");
  assert.equal(calls, 2);
});

test("a refused static token stops at once (nothing to retry with)", async () => {
  server.verify = () => ({ code: "token_expired", close: 4001 });
  const c = client({ token: "old" });
  const closed = next(c, "closed");
  c.connect();
  const { error } = await closed;
  assert.equal(error.code, "token_expired");
  assert.match(error.message, /no getToken/);
  await sleep(200);
  assert.equal(server.connections.length, 1);
});

for (const [code, serverCode] of [[1008, "rate_limited"], [1009, undefined], [4003, "bad_auth"]]) {
  test(`close ${code} is a refusal: the client stops and reports it`, async () => {
    const c = client();
    c.connect();
    const conn = await server.connection(0);
    await next(c, "connected");
    const closed = next(c, "closed");
    const errors = collect(c, "error");
    if (serverCode) conn.send({ type: "error", code: serverCode, message: "refused" });
    conn.close(code, "refused");
    const { error } = await closed;
    assert.equal(error.closeCode, code);
    assert.ok(errors.includes(error), "the stop error is also an error event");
    await sleep(300);
    assert.equal(server.connections.length, 1, "no reconnect after a refusal");
  });
}

test("a refused upgrade (legacy ?token= form: HTTP 401) backs off and asks getToken() again", async () => {
  server.verify = (token) => (token === "good" ? { userId: "1" } : { code: "token_expired", close: 4001 });
  const tokens = ["bad", "bad", "good"];
  const c = client({ auth: "query", token: undefined, getToken: () => tokens.shift() });
  const disconnects = collect(c, "disconnected");
  c.connect();
  await next(c, "connected");
  assert.equal(server.handshakes.length, 3);
  assert.deepEqual(disconnects.map((d) => d.code), [1006, 1006]);
  assert.ok(disconnects.every((d) => d.delayMs >= fast.backoff.minMs));
});

test("1012 and 1001 reconnect at once (jittered); 1013 and 4002 back off; 4029 waits long", async () => {
  const delays = {};
  for (const code of [1012, 1001, 1013, 4002, 4029]) {
    const c = client({ stableMs: 0, backoff: { ...fast.backoff, minMs: 50, initialMs: 100, immediateMs: 10, longMs: 400 } });
    const disconnected = next(c, "disconnected");
    const count = server.connections.length;
    c.connect();
    const conn = await server.connection(count);
    await next(c, "connected");
    conn.close(code, "bye");
    delays[code] = (await disconnected).delayMs;
    c.disconnect();
  }
  assert.ok(delays[1012] < 10 && delays[1001] < 10, JSON.stringify(delays));
  assert.ok(delays[1013] >= 50 && delays[1013] <= 100, JSON.stringify(delays));
  assert.ok(delays[4002] >= 50 && delays[4002] <= 100, JSON.stringify(delays));
  assert.ok(delays[4029] >= 200 && delays[4029] <= 400, JSON.stringify(delays));
});

test("repeated drains of short-lived connections fall back to backoff (no tight loop)", async () => {
  const c = client({ backoff: { ...fast.backoff, minMs: 30, initialMs: 60, immediateMs: 5 } });
  const delays = collect(c, "disconnected");
  c.connect();
  for (let i = 0; i < 4; i++) {
    const conn = await server.connection(i);
    await conn.next("auth");
    await sleep(5);
    conn.close(1012, "draining");
  }
  await server.connection(4);
  assert.ok(delays[0].delayMs < 5, "the first drain reconnects at once");
  for (const d of delays.slice(1)) assert.ok(d.delayMs >= 30, `later drains back off: ${d.delayMs}`);
});

test("resume: resubscribe with since after a reconnect, drop duplicates, deliver every offset once in order", async () => {
  server.duplicate = true; // the fake replays from `since` regardless, and...
  server.autoChannels = ["orders"]; // ...re-delivers the whole history at connect (offline delivery)
  server.offlineAll = true;
  const c = client();
  const sub = c.subscribe("orders");
  const got = collect(sub, "publication");
  const all = collect(c, "publication");
  c.connect();
  const first = await server.connection(0);
  await first.next("subscribe");
  for (let i = 0; i < 12; i++) server.publish("orders", { i });
  await until(() => got.length === 12);
  first.close(1012, "draining");
  await next(c, "disconnected");
  for (let i = 12; i < 15; i++) server.publish("orders", { i }); // missed while away
  const second = await server.connection(1);
  const subscribe = await second.next("subscribe");
  assert.deepEqual(subscribe.since, { orders: "1700000000000-12" });
  for (let i = 15; i < 17; i++) server.publish("orders", { i });
  await until(() => got.length === 17);
  await sleep(50);
  assert.deepEqual(got.map((p) => p.data.i), [...Array(17).keys()]);
  assert.equal(all.length, 17, "client-level publications are deduplicated too");
  assert.equal(sub.offset, "1700000000000-17");
  assert.equal(c.lastOffset("orders"), "1700000000000-17");
});

test("recovered:false reaches the subscription so the app can refetch", async () => {
  server.recovered = () => false;
  const c = client();
  const sub = c.subscribe("orders", { since: "1700000000000-3" });
  const subscribed = next(sub, "subscribed");
  const clientSubscribed = next(c, "subscribed");
  c.connect();
  const conn = await server.connection(0);
  assert.deepEqual((await conn.next("subscribe")).since, { orders: "1700000000000-3" });
  assert.deepEqual(await subscribed, { recovered: false });
  assert.deepEqual(await clientSubscribed, { channel: "orders", recovered: false });
  assert.equal(sub.state, "subscribed");
});

test("channels joined at connect are resumed with since too, and legacy pushes without a channel pass through", async () => {
  server.autoChannels = ["alerts"];
  const c = client();
  const pubs = collect(c, "publication");
  c.connect();
  const conn = await server.connection(0);
  await next(c, "connected");
  server.publish("alerts", { text: "one" }, "alert");
  conn.send({ type: "notification", data: { title: "legacy" } });
  await until(() => pubs.length === 2);
  assert.equal(pubs[0].channel, "alerts");
  assert.equal(pubs[0].type, "alert");
  assert.equal(pubs[1].channel, undefined);
  assert.deepEqual(pubs[1].data, { title: "legacy" });
  conn.close(1001, "silent");
  const second = await server.connection(1);
  assert.deepEqual(await second.next("subscribe"), { type: "subscribe", channels: ["alerts"], since: { alerts: "1700000000000-1" } });
});

test("auto ack: sent after the handler's promise resolves, in offset order, coalesced", async () => {
  const c = client();
  const sub = c.subscribe("tasks", { ack: "auto" });
  const resolvers = [];
  sub.on("publication", () => new Promise((resolve) => resolvers.push(resolve)));
  c.connect();
  const conn = await server.connection(0);
  await conn.next("subscribe");
  server.publish("tasks", { n: 1 });
  server.publish("tasks", { n: 2 });
  await until(() => resolvers.length === 2);
  resolvers[1]();
  await sleep(60);
  assert.equal(conn.all("ack").length, 0, "no ack while an earlier handler is still running");
  resolvers[0]();
  const ack = await conn.next("ack");
  assert.deepEqual(ack, { type: "ack", channel: "tasks", offset: "1700000000000-2" });
  await sleep(60);
  assert.equal(conn.all("ack").length, 1, "one ack covers both");
});

test("auto ack: a failing handler is reported and does not stall the channel", async () => {
  const c = client();
  const sub = c.subscribe("tasks", { ack: "auto" });
  sub.on("publication", async (p) => {
    if (p.data.n === 1) throw new Error("boom");
  });
  const subErrors = collect(sub, "error");
  c.connect();
  const conn = await server.connection(0);
  await conn.next("subscribe");
  server.publish("tasks", { n: 1 });
  assert.equal((await conn.next("ack")).offset, "1700000000000-1");
  assert.equal(subErrors[0].code, "handler_failed");
  assert.equal(subErrors[0].cause.message, "boom");
});

test("manual ack: publication.ack() sends the ack; a redelivered acked offset is re-acked, not re-delivered", async () => {
  server.autoChannels = ["tasks"];
  server.offlineAll = true; // unacked (here: ack lost) messages come again at connect
  const c = client();
  const sub = c.subscribe("tasks", { ack: "manual" });
  const got = collect(sub, "publication");
  c.connect();
  const conn = await server.connection(0);
  await conn.next("subscribe");
  server.publish("tasks", { n: 1 });
  await until(() => got.length === 1);
  await sleep(30);
  assert.equal(conn.all("ack").length, 0, "manual mode never acks by itself");
  got[0].ack();
  assert.equal((await conn.next("ack")).offset, "1700000000000-1");
  conn.close(1012, "draining");
  const second = await server.connection(1);
  assert.equal((await second.next("ack")).offset, "1700000000000-1");
  assert.equal(got.length, 1);
});

test("liveness: unanswered pings make the client drop the connection and reconnect", async () => {
  server.answerPings = false;
  const c = client({ pingIntervalMs: 50, pongTimeoutMs: 50 });
  c.connect();
  const conn = await server.connection(0);
  await next(c, "connected");
  const { code, reason } = await next(c, "disconnected");
  assert.equal(code, 4000);
  assert.equal(reason, "liveness timeout");
  assert.ok(conn.all("ping").length >= 1);
  await server.connection(1);
  await next(c, "connected");
});

test("liveness: answered pings keep the connection", async () => {
  const c = client({ pingIntervalMs: 30, pongTimeoutMs: 30 });
  const disconnects = collect(c, "disconnected");
  c.connect();
  const conn = await server.connection(0);
  await sleep(300);
  assert.ok(conn.all("ping").length >= 5);
  assert.equal(disconnects.length, 0);
  assert.equal(server.connections.length, 1);
});

test("a connection that never authenticates is given up after connectTimeoutMs", async () => {
  server.handle = () => {}; // never answers the auth frame
  const c = client({ connectTimeoutMs: 100 });
  c.connect();
  await server.connection(0);
  const { code, reason } = await next(c, "disconnected");
  assert.equal(code, 4000);
  assert.equal(reason, "connect timeout");
  await server.connection(1);
});

test("a getToken() that never settles is given up after connectTimeoutMs and asked again", async () => {
  let calls = 0;
  const c = client({ connectTimeoutMs: 80, token: undefined, getToken: () => (++calls === 1 ? new Promise(() => {}) : "tok") });
  const disconnected = next(c, "disconnected");
  c.connect();
  assert.equal((await disconnected).reason, "connect timeout");
  await next(c, "connected");
  assert.equal(calls, 2);
  assert.equal(server.connections.length, 1);
});

test("every server error frame reaches the app; refused channels are marked and named", async () => {
  server.forbidden = new Set(["secret", "CORP@ops:x"]);
  const c = client();
  const sub = c.subscribe("secret");
  const other = c.subscribe("CORP@ops:x");
  const fine = c.subscribe("orders");
  const subError = next(sub, "error");
  const errors = collect(c, "error");
  c.connect();
  const conn = await server.connection(0);
  await conn.next("subscribe");
  const e = await subError;
  assert.equal(e.code, "forbidden");
  assert.deepEqual(e.channels, ["secret", "CORP@ops:x"]);
  conn.send({ type: "error", code: "rate_limited", message: "slow down" });
  conn.send({ type: "error", code: "bad_request", channel: "orders", message: "bad" });
  const fineError = await next(fine, "error");
  assert.equal(fineError.code, "bad_request");
  await until(() => errors.length === 3);
  assert.deepEqual(errors.map((x) => x.code), ["forbidden", "rate_limited", "bad_request"]);
  assert.equal(sub.state, "refused");
  assert.equal(other.state, "refused");
  assert.equal(fine.state, "subscribed", "an error about a subscribed channel does not unsubscribe it");
  conn.close(1012, "drain");
  const second = await server.connection(1);
  await next(c, "connected");
  assert.deepEqual((await second.next("subscribe")).channels, ["orders"], "a refused channel is not resubscribed by itself");
});

test("hostile user ids and data round-trip exactly; edge-of-rule channel names work", async () => {
  const names = ["a", "x".repeat(128), "CORP@alice:orders.v2_-", "0", "orders"];
  const userId = 'CORP\\alice "the" 😀 ' + "z".repeat(5000);
  server.verify = () => ({ userId });
  const c = client();
  const subs = names.map((n) => c.subscribe(n));
  const connected = next(c, "connected");
  c.connect();
  const conn = await server.connection(0);
  assert.deepEqual((await connected).userId, userId);
  assert.deepEqual((await conn.next("subscribe")).channels, names);
  const data = { text: 'he said "hi"\\n</script>', nested: { user: userId, emoji: "🎉", nul: "\u0000" }, big: "y".repeat(50000) };
  for (const name of names) server.publish(name, data);
  const got = await Promise.all(subs.map((s) => next(s, "publication")));
  got.forEach((p, i) => {
    assert.equal(p.channel, names[i]);
    assert.deepEqual(p.data, data);
  });
  // A push on a channel name the SDK would never subscribe to still reaches the app as is.
  const odd = next(c, "publication", (p) => p.channel === 'CORP\\alice "😀"');
  conn.send({ type: "notification", channel: 'CORP\\alice "😀"', data: { ok: true }, offset: "5-1" });
  assert.deepEqual((await odd).data, { ok: true });
});

test("channel names outside the node's rule are refused before anything is sent", () => {
  const c = client();
  for (const bad of ['quo"te', "back\\slash", "CORP\\alice", "emoji😀", "x".repeat(129), "orders\u200b", "ordeｒs", "a b", "news*", ""]) {
    assert.throws(() => c.subscribe(bad), (e) => e instanceof TypeError && e.message.includes(JSON.stringify(bad)) && /1-128 letters/.test(e.message), bad);
  }
});

test("subscribe frames are split at maxChannelsPerSubscribe", async () => {
  const c = client({ maxChannelsPerSubscribe: 2 });
  for (const n of ["a", "b", "c", "d", "e"]) c.subscribe(n);
  c.connect();
  const conn = await server.connection(0);
  await until(() => conn.all("subscribe").length === 3);
  assert.deepEqual(conn.all("subscribe").map((f) => f.channels), [["a", "b"], ["c", "d"], ["e"]]);
});

test("subscribe after connect is sent at once; unsubscribe leaves the channel and stops resuming it", async () => {
  const c = client();
  c.connect();
  const conn = await server.connection(0);
  await next(c, "connected");
  const sub = c.subscribe("orders");
  assert.equal(c.subscribe("orders"), sub, "one subscription per channel");
  await conn.next("subscribe");
  server.publish("orders", { n: 1 });
  await next(sub, "publication");
  const unsubscribed = next(sub, "unsubscribed");
  sub.unsubscribe();
  await unsubscribed;
  assert.deepEqual(await conn.next("unsubscribe"), { type: "unsubscribe", channels: ["orders"] });
  assert.equal(sub.state, "unsubscribed");
  conn.close(1012, "drain");
  const second = await server.connection(1);
  await next(c, "connected");
  await sleep(50);
  assert.equal(second.all("subscribe").length, 0);
});

test("getToken failures are reported and retried with backoff; a bad token value stops", async () => {
  let calls = 0;
  const c = client({ token: undefined, getToken: async () => {
    if (++calls < 3) throw new Error("offline");
    return "tok";
  } });
  const errors = collect(c, "error");
  c.connect();
  await next(c, "connected");
  assert.deepEqual(errors.map((e) => e.code), ["token_unavailable", "token_unavailable"]);
  assert.equal(errors[0].cause.message, "offline");

  const bad = client({ token: undefined, getToken: () => "" });
  const closed = next(bad, "closed");
  bad.connect();
  assert.equal((await closed).error.code, "bad_token");
});

test("bad options and arguments are refused with clear errors", () => {
  assert.throws(() => new HeraldClient({ token: "t" }), /url/);
  assert.throws(() => new HeraldClient({ url: server.url }), /token.*getToken/);
  assert.throws(() => new HeraldClient({ url: server.url, token: "" }), /non-empty/);
  assert.throws(() => new HeraldClient({ url: server.url, token: "t", auth: "cookie" }), /auth/);
  assert.throws(() => new HeraldClient({ url: server.url, getToken: "nope" }), /getToken/);
  const c = client();
  assert.throws(() => c.subscribe(42), /channel name 42/);
  assert.throws(() => c.subscribe("a", { ack: "yes" }), /ack/);
  assert.throws(() => c.subscribe("a", { since: "yesterday" }), /since.*"yesterday"/);
  // Anonymous connections are possible on the legacy form only.
  assert.doesNotThrow(() => client({ token: undefined, auth: "query" }));
});

test("a URL that cannot be opened stops with bad_url; http(s) URLs are turned into ws(s)", async () => {
  const c = client({ url: "not a url" });
  const closed = next(c, "closed");
  c.connect();
  const { error } = await closed;
  assert.equal(error.code, "bad_url");
  assert.match(error.message, /"not a url"/);

  const h = client({ url: server.url.replace("ws:", "http:") });
  h.connect();
  await next(h, "connected");
});

test("a WebSocket constructor can be injected (e.g. the ws package on Node 20)", async () => {
  const { WebSocket: Ws } = await import("ws");
  let made = 0;
  class Counting extends Ws {
    constructor(url) {
      super(url);
      made++;
    }
  }
  const c = client({ WebSocket: Counting });
  c.connect();
  await next(c, "connected");
  assert.equal(made, 1);
});

test("a listener that throws is reported and does not disturb the client", async () => {
  const reported = [];
  globalThis.reportError = (error) => reported.push(error);
  try {
    const c = client();
    c.on("connected", () => {
      throw new Error("listener bug");
    });
    const sub = c.subscribe("orders");
    sub.on("publication", () => {
      throw new Error("handler bug");
    });
    const got = collect(sub, "publication");
    c.connect();
    const conn = await server.connection(0);
    await conn.next("subscribe");
    server.publish("orders", { n: 1 });
    server.publish("orders", { n: 2 });
    await until(() => got.length === 2);
    assert.deepEqual(reported.map((e) => e.message), ["listener bug", "handler bug", "handler bug"]);
    assert.equal(c.state, "connected");
  } finally {
    delete globalThis.reportError;
  }
});

test("disconnect() stops for good; connect() starts again", async () => {
  const c = client();
  c.connect();
  await next(c, "connected");
  const closed = next(c, "closed");
  c.disconnect();
  assert.deepEqual(await closed, { error: undefined });
  assert.equal(c.state, "closed");
  await sleep(100);
  assert.equal(server.connections.length, 1);
  c.connect();
  await next(c, "connected");
  assert.equal(server.connections.length, 2);
});

async function until(condition, timeoutMs = 3000) {
  const end = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms: ${condition}`);
    await sleep(5);
  }
}

test("types: the subscribe carries the filter, resumes keep it, a new filter is sent at once", async () => {
  const c = client();
  const prices = c.subscribe("stocks", { types: ["price", "CORP\\\"q\" 😀", "price"] });
  c.subscribe("alerts");
  c.connect();
  const first = await server.connection(0);
  const filtered = await first.next((f) => f.type === "subscribe" && f.channels.includes("stocks"));
  assert.deepEqual(filtered.channels, ["stocks"], "a filter travels in a frame of its own");
  assert.deepEqual(filtered.filter, { types: ["CORP\\\"q\" 😀", "price"] });
  const plain = await first.next((f) => f.type === "subscribe" && f.channels.includes("alerts"));
  assert.equal(plain.filter, undefined);
  server.publish("stocks", { i: 0 });
  await next(prices, "publication");
  first.close(1012, "draining");
  const second = await server.connection(1);
  const resumed = await second.next((f) => f.type === "subscribe" && f.channels.includes("stocks"));
  assert.deepEqual(resumed.filter, { types: ["CORP\\\"q\" 😀", "price"] });
  assert.ok(resumed.since && resumed.since.stocks, "the resume carries since with the filter");
  await until(() => prices.state === "subscribed");
  c.subscribe("stocks", { types: ["volume"] });
  const changed = await second.next((f) => f.type === "subscribe" && f.filter && f.filter.types[0] === "volume");
  assert.deepEqual(changed.channels, ["stocks"]);
  assert.throws(() => c.subscribe("other", { types: [] }), /types/);
  assert.throws(() => c.subscribe("other", { types: [7] }), /types/);
  assert.throws(() => c.subscribe("other", { types: Array.from({ length: 17 }, (_, i) => `t${i}`) }), /types/);
});

test("tags: the subscribe carries the tag filter with the types, a new one is sent at once, publications expose tags", async () => {
  const c = client();
  const who = 'CORP\\alice "😀"';
  const stock = c.subscribe("stock", { types: ["level"], tags: { sku: ["B-2", who, "B-2"], region: "eu" } });
  c.connect();
  const conn = await server.connection(0);
  const frame = await conn.next((f) => f.type === "subscribe" && f.channels.includes("stock"));
  assert.deepEqual(frame.filter, { types: ["level"], tags: { region: { eq: "eu" }, sku: { in: ["B-2", who].sort() } } });
  assert.deepEqual(Object.keys(frame.filter.tags), ["region", "sku"], "keys sorted");
  await until(() => stock.state === "subscribed");
  conn.send({ type: "level", channel: "stock", id: "t1", offset: "1700000000000-1", data: { n: 1 }, tags: { region: "eu", sku: who } });
  const tagged = await next(stock, "publication");
  assert.deepEqual(tagged.tags, { region: "eu", sku: who });
  conn.send({ type: "level", channel: "stock", id: "t2", offset: "1700000000000-2", data: { n: 2 } });
  assert.equal((await next(stock, "publication")).tags, undefined);
  c.subscribe("stock", { tags: { region: "us" } });
  const changed = await conn.next((f) => f.type === "subscribe" && f.filter && f.filter.tags && f.filter.tags.region.eq === "us");
  assert.deepEqual(changed.filter, { tags: { region: { eq: "us" } } }, "types dropped with the new filter");
  for (const bad of [{}, { "a b": "x" }, { [`k${"x".repeat(64)}`]: "x" }, { "CORP\\alice": "x" }, { region: 5 }, { region: [] },
    { region: Array.from({ length: 33 }, (_, i) => `${i}`) }, Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`k${i}`, "v"])), ["region"], null]) {
    assert.throws(() => c.subscribe("other", { tags: bad }), /tags/, JSON.stringify(bad));
  }
});
