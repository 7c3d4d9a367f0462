// The client on the `ws` package instead of a global WebSocket: how it runs on Node
// 18 and 20. This file needs no global WebSocket, so run-tests.sh also runs it on the
// machine's own Node when that is older than 22.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { FakeHerald } from "./fake-server.mjs";

const { HeraldClient } = await import(process.env.HERALD_JS_BUNDLE ? "../../dist/herald.min.js" : "../../dist/index.js");

const server = await FakeHerald.start();
after(() => server.stop());

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
async function until(condition, what) {
  const end = Date.now() + 3000;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

test(`on Node ${process.version} with ws: connect, receive, resume after a drain, refusal stops`, async (t) => {
  let calls = 0;
  const c = new HeraldClient({ url: server.url, WebSocket, getToken: () => `t${++calls}`, backoff: { minMs: 10, initialMs: 20, immediateMs: 5 } });
  t.after(() => c.disconnect());
  const sub = c.subscribe("orders");
  const got = [];
  sub.on("publication", (p) => got.push(p.data.n));
  let connected = 0;
  c.on("connected", () => connected++);
  c.connect();
  const first = await server.connection(0);
  await first.next("subscribe");
  server.publish("orders", { n: 1 });
  await until(() => got.length === 1, "the first message");
  first.close(1012, "draining");
  await until(() => connected === 2, "the reconnect");
  const second = await server.connection(1);
  assert.deepEqual((await second.next("subscribe")).since, { orders: "1700000000000-1" });
  server.publish("orders", { n: 2 });
  await until(() => got.length === 2, "the second message");
  assert.deepEqual(got, [1, 2]);
  assert.equal(calls, 2);
  const closed = new Promise((resolve) => c.on("closed", resolve));
  second.close(1008, "flooding");
  assert.equal((await closed).error.closeCode, 1008);
});

test("with ws, a refused upgrade (HTTP 401) backs off and is retried with a fresh token", async (t) => {
  const before = server.handshakes.length;
  server.verify = (token) => (token === "good" ? { userId: "1" } : { code: "token_expired", close: 4001 });
  const tokens = ["bad", "good"];
  const c = new HeraldClient({ url: server.url, WebSocket, auth: "query", getToken: () => tokens.shift(), backoff: { minMs: 10, initialMs: 20 } });
  t.after(() => c.disconnect());
  const codes = [];
  c.on("disconnected", (d) => codes.push(d.code));
  const connected = new Promise((resolve) => c.on("connected", resolve));
  c.connect();
  await connected;
  assert.deepEqual(codes, [1006]);
  assert.equal(server.handshakes.length - before, 2);
});
