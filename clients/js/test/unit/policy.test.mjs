// The close-code table and the backoff bounds, tested as the pure functions they are.
import { test } from "node:test";
import assert from "node:assert/strict";
// HERALD_JS_BUNDLE=1 runs the same tests on the minified bundle.
const { backoffDefaults, closeAction, delayFor, compareOffsets, isOffset } = await import(process.env.HERALD_JS_BUNDLE ? "../../dist/herald.min.js" : "../../dist/index.js");

test("every documented close code maps to its action", () => {
  const table = {
    1000: "backoff", 1001: "immediate", 1006: "backoff", 1008: "stop", 1009: "stop", 1011: "backoff",
    1012: "immediate", 1013: "backoff", 4000: "backoff", 4001: "token", 4002: "backoff", 4003: "stop", 4029: "long",
  };
  for (const [code, action] of Object.entries(table)) assert.equal(closeAction(Number(code)), action, `close ${code}`);
});

test("full-jitter backoff stays within [minMs, min(maxMs, initialMs * factor^attempt)]", () => {
  const o = backoffDefaults();
  assert.deepEqual(o, { initialMs: 1000, maxMs: 30000, factor: 2, minMs: 250, immediateMs: 1000, longMs: 60000 });
  for (let attempt = 0; attempt < 40; attempt++) {
    const cap = Math.min(30000, 1000 * 2 ** attempt);
    assert.equal(delayFor("backoff", attempt, o, () => 0), 250, `attempt ${attempt} low end`);
    const high = delayFor("backoff", attempt, o, () => 0.999999);
    assert.ok(high <= cap && high > cap * 0.999, `attempt ${attempt}: ${high} vs cap ${cap}`);
    for (let i = 0; i < 50; i++) {
      const d = delayFor("backoff", attempt, o, Math.random);
      assert.ok(d >= 250 && d <= cap, `attempt ${attempt}: ${d}`);
    }
  }
  // The cap grows with the attempt number until maxMs.
  assert.equal(delayFor("backoff", 3, o, () => 0.5), 250 + 0.5 * (8000 - 250));
  assert.equal(delayFor("backoff", 99, o, () => 0.5), 250 + 0.5 * (30000 - 250));
});

test("immediate reconnects are jittered within immediateMs; long waits within [longMs/2, longMs]", () => {
  const o = backoffDefaults({ immediateMs: 500, longMs: 10000 });
  const samples = Array.from({ length: 200 }, () => delayFor("immediate", 0, o, Math.random));
  assert.ok(samples.every((d) => d >= 0 && d < 500));
  assert.ok(new Set(samples).size > 100, "jittered, not constant");
  for (let i = 0; i < 100; i++) {
    const d = delayFor("long", i, o, Math.random);
    assert.ok(d >= 5000 && d <= 10000, String(d));
  }
});

test("a cap below minMs never yields a delay below minMs", () => {
  const o = backoffDefaults({ initialMs: 10, minMs: 100, maxMs: 50 });
  for (let i = 0; i < 20; i++) assert.equal(delayFor("backoff", i, o, Math.random), 100);
});

test("offsets order as the server orders them (numbers of any size, not text)", () => {
  assert.ok(compareOffsets("17-3", "17-10") < 0);
  assert.ok(compareOffsets("18-0", "17-10") > 0);
  assert.equal(compareOffsets("17", "17-0"), 0);
  assert.equal(compareOffsets("017-03", "17-3"), 0);
  assert.ok(compareOffsets("9-0", "10-0") < 0);
  assert.ok(compareOffsets("18446744073709551615-0", "18446744073709551614-99") > 0);
  assert.ok(compareOffsets("1700000000000-9007199254740993", "1700000000000-9007199254740992") > 0);
  for (const bad of ["", "x-1", "1-2-3", "-1", "1-", " 1-1", "1.5-0", "１-0"]) {
    assert.equal(isOffset(bad), false, JSON.stringify(bad));
    assert.throws(() => compareOffsets(bad, "1-0"), TypeError);
    assert.throws(() => compareOffsets("1-0", bad), TypeError);
  }
  assert.equal(isOffset(17), false);
});
