// The pure parts of handlers/topics/js/canopy.js: backoff, offset bookkeeping,
// patterns and token expiry. The connection itself is tested in a real browser
// against a real server (tests/e2e/test_canopy_js.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import { Position, backoff, expiry, matches } from "../../handlers/topics/js/canopy.js";

test("backoff doubles up to its ceiling, with at least half of it waited", () => {
  const low = () => 0;
  const high = () => 0.999999;
  assert.deepEqual([1, 2, 3, 4].map((n) => backoff(n, { initial: 100, max: 1000 }, low)), [50, 100, 200, 400]);
  assert.deepEqual([1, 2, 3, 4].map((n) => backoff(n, { initial: 100, max: 1000 }, high)), [100, 200, 400, 800]);
  assert.equal(backoff(40, { initial: 100, max: 1000 }, high), 1000);
  assert.equal(backoff(1e9, {}, low), 7500); // no overflow to Infinity
});

test("backoff spreads clients over the upper half of the ceiling", () => {
  const delays = new Set(Array.from({ length: 200 }, () => backoff(3, { initial: 100, max: 10000 })));
  assert.ok(delays.size > 50, "jittered");
  for (const delay of delays) assert.ok(delay >= 200 && delay <= 400, delay);
});

test("a first subscribe starts at the topic's current offset", () => {
  const position = new Position();
  assert.deepEqual(position.resume(), {});
  assert.equal(position.subscribed({ offset: 41, epoch: "e1", recovered: true }), true);
  assert.equal(position.accept({ offset: 42, epoch: "e1" }), true);
  assert.deepEqual(position.resume(), { since: 42, epoch: "e1" });
});

test("a resume keeps its place, and what arrives twice is delivered once", () => {
  const position = new Position(40, "e1");
  assert.deepEqual(position.resume(), { since: 40, epoch: "e1" });
  assert.equal(position.subscribed({ offset: 45, epoch: "e1", recovered: true }), true);
  assert.deepEqual(
    [41, 42, 42, 41, 43].map((offset) => position.accept({ offset, epoch: "e1" })),
    [true, true, false, false, true],
  );
  assert.equal(position.offset, 43);
});

test("since 0 without an epoch replays the window", () => {
  const position = new Position(0);
  assert.deepEqual(position.resume(), { since: 0 });
  assert.equal(position.subscribed({ offset: 3, epoch: "e1", recovered: true }), true);
  assert.deepEqual([1, 2, 3].map((offset) => position.accept({ offset, epoch: "e1" })), [true, true, true]);
});

test("recovered: false moves to the new epoch's current offset and says so", () => {
  const position = new Position(120, "old");
  assert.equal(position.subscribed({ offset: 7, epoch: "new", recovered: false }), false);
  assert.deepEqual(position.resume(), { since: 7, epoch: "new" });
  assert.equal(position.accept({ offset: 7, epoch: "new" }), false);
  assert.equal(position.accept({ offset: 8, epoch: "new" }), true);
});

test("a message of another epoch starts that epoch", () => {
  const position = new Position(9, "e1");
  position.subscribed({ offset: 9, epoch: "e1", recovered: true });
  assert.equal(position.accept({ offset: 1, epoch: "e2" }), true);
  assert.deepEqual(position.resume(), { since: 1, epoch: "e2" });
});

test("a pattern's subscribed reply has no offset", () => {
  const position = new Position();
  assert.equal(position.subscribed({ topic: "orders.*", recovered: true }), true);
});

test("patterns match as docs/PROTOCOL.md says", () => {
  assert.ok(matches("*", "a.b"));
  assert.ok(matches("orders.1", "orders.1"));
  assert.ok(matches("orders.*", "orders.1"));
  assert.ok(matches("orders.*", "orders.1.lines"));
  assert.ok(!matches("orders.*", "orders"));
  assert.ok(!matches("orders.*", "ordersX.1"));
  assert.ok(!matches("orders.1", "orders.12"));
});

test("a token's expiry is read from its claims", () => {
  const encode = (claims) => Buffer.from(JSON.stringify(claims)).toString("base64url");
  assert.equal(expiry(`${encode({ alg: "HS256" })}.${encode({ sub: "u", exp: 1700000000 })}.sig`), 1700000000);
  assert.equal(expiry(`${encode({ alg: "HS256" })}.${encode({ sub: "u" })}.sig`), Infinity);
  assert.equal(expiry("not a token"), Infinity);
});
