// The minified bundle in headless Chromium against a real herald-node: a page
// subscribes, loses its connection, misses messages while away and gets every one of
// them exactly once, in order. Needs the same variables as herald.test.mjs, and
// Chromium (HERALD_CHROMIUM, default /usr/bin/chromium); fails without them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { spawn } from "node:child_process";
import { createHmac, randomUUID } from "node:crypto";
import { readFileSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = (name) => process.env[name];
const missing = ["HERALD_WS_URL", "HERALD_HTTP_URL", "HERALD_API_KEY", "HERALD_JWT_SECRET"].filter((n) => !env(n));
if (missing.length) throw new Error(`browser integration test needs a running herald-node: set ${missing.join(", ")}`);
const CHROMIUM = env("HERALD_CHROMIUM") || "/usr/bin/chromium";
if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: install it or set HERALD_CHROMIUM`);
const MODE = env("HERALD_AUTH_MODE") || "message";
const HTTP_URL = env("HERALD_HTTP_URL").replace(/\/$/, "");

function mint(userId) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part({ user_id: userId, exp: Math.floor(Date.now() / 1000) + 600 })}`;
  return `${body}.${createHmac("sha256", env("HERALD_JWT_SECRET")).update(body).digest("base64url")}`;
}

async function publish(user, i) {
  const response = await fetch(`${HTTP_URL}/api/v1/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${env("HERALD_API_KEY")}`, "content-type": "application/json" },
    body: JSON.stringify({ channel: "orders", type: "order_update", users: [user], data: { i, text: 'q"uote\\ 😀' } }),
  });
  assert.equal(response.status, 200, await response.text());
}

// The page: the real bundle, a WebSocket that lets it cut its own connection, and
// progress reported to the test server by POST.
const PAGE = `<!doctype html><meta charset="utf-8"><script type="module">
import { HeraldClient } from "/herald.min.js";
const config = JSON.parse(decodeURIComponent(location.hash.slice(1)));
const report = (kind, body) => fetch("/report/" + kind, { method: "POST", body: JSON.stringify(body) });
const sockets = [];
class Tracked extends WebSocket { constructor(url) { super(url); sockets.push(this); } }
const client = new HeraldClient({ url: config.url, auth: config.mode, token: config.token, WebSocket: Tracked,
  backoff: { initialMs: 1500, minMs: 1200, maxMs: 1500 } });
const got = [];
const orders = client.subscribe("orders");
client.on("error", (e) => report("error", { code: e.code, message: e.message }));
client.on("disconnected", (d) => report("away", d));
orders.on("subscribed", (s) => report("subscribed", s));
orders.on("publication", (p) => {
  got.push({ i: p.data.i, text: p.data.text, offset: p.offset });
  if (got.length === 3) sockets[sockets.length - 1].close();
  if (got.length === 6) setTimeout(() => report("done", { got, sockets: sockets.length }), 300);
});
client.connect();
</script>`;

test("the bundle in Chromium resumes across a cut connection: six messages, each once, in order", async (t) => {
  const bundle = readFileSync(new URL("../../dist/herald.min.js", import.meta.url));
  const waiters = new Map();
  const reports = [];
  const server = createServer((req, res) => {
    if (req.url === "/") return res.writeHead(200, { "content-type": "text/html" }).end(PAGE);
    if (req.url === "/herald.min.js") return res.writeHead(200, { "content-type": "text/javascript" }).end(bundle);
    if (req.method === "POST" && req.url.startsWith("/report/")) {
      let body = "";
      req.on("data", (chunk) => (body += chunk));
      req.on("end", () => {
        const kind = req.url.slice("/report/".length);
        const value = JSON.parse(body);
        reports.push({ kind, value });
        waiters.get(kind)?.(value);
        res.writeHead(204).end();
      });
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const profile = mkdtempSync(join(tmpdir(), "herald-js-chromium-"));
  const user = `CORP\\alice "browser" 😀 ${randomUUID()}`;
  const config = { url: env("HERALD_WS_URL"), mode: MODE, token: mint(user) };
  const page = `http://127.0.0.1:${server.address().port}/#${encodeURIComponent(JSON.stringify(config))}`;
  // Its own process group: Chromium's helper processes (renderer, GPU, network) are
  // stopped with it, so none is still writing the profile when it is removed.
  const chromium = spawn(CHROMIUM, ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
    `--user-data-dir=${profile}`, page], { stdio: "ignore", detached: true });
  const exited = new Promise((resolve) => chromium.on("exit", resolve));
  const signalGroup = (signal) => {
    try { process.kill(-chromium.pid, signal); } catch { /* already gone */ }
  };
  t.after(async () => {
    signalGroup("SIGTERM");
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 3000))]);
    signalGroup("SIGKILL");
    await exited;
    // Helpers outlive the main process by a moment after SIGKILL.
    await new Promise((resolve) => setTimeout(resolve, 200));
    server.close();
    rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
  });
  const when = (kind, timeoutMs = 30000) =>
    new Promise((resolve, reject) => {
      const seen = reports.find((r) => r.kind === kind);
      if (seen) return resolve(seen.value);
      const timer = setTimeout(() => reject(new Error(`the page did not report ${kind}; reports: ${JSON.stringify(reports)}`)), timeoutMs);
      waiters.set(kind, (value) => {
        clearTimeout(timer);
        resolve(value);
      });
    });

  await when("subscribed");
  for (let i = 0; i < 3; i++) await publish(user, i);
  const away = await when("away");
  assert.ok(away.delayMs >= 1200, JSON.stringify(away));
  for (let i = 3; i < 5; i++) await publish(user, i); // while the page is away
  await new Promise((resolve) => setTimeout(resolve, 2500)); // back by now
  await publish(user, 5);
  const { got, sockets } = await when("done");
  assert.deepEqual(got.map((m) => m.i), [0, 1, 2, 3, 4, 5]);
  assert.ok(got.every((m) => m.text === 'q"uote\\ 😀'));
  assert.equal(new Set(got.map((m) => m.offset)).size, 6);
  assert.equal(sockets, 2);
  assert.deepEqual(reports.filter((r) => r.kind === "error"), []);
});
