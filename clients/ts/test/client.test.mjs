// The typed client against the real server (started here: 127.0.0.1, free port, stopped by PID).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { DpDauClient, DpDauError, isBudgetRefused, isNotClosed } from "../build/src/index.js";
import { startServer } from "../scripts/server.mjs";

const KEY = "k".repeat(32);
let server;
let dp;

before(async () => {
  server = await startServer({ API_KEY: KEY });
  dp = new DpDauClient({ baseUrl: server.url, apiKey: KEY });
});

after(async () => {
  await server?.stop();
});

const DAY = "2025-07-01";
const events = Array.from({ length: 40 }, (_, i) => ({ user_id: `u${i}`, op: "+", day: DAY }));

test("ingest is durable and idempotent", async () => {
  const receipt = await dp.ingest(events, { idempotencyKey: "ts-batch-1" });
  assert.equal(receipt.ingested, 40);
  assert.deepEqual(await dp.ingest(events, { idempotencyKey: "ts-batch-1" }), receipt);
  const single = await dp.ingest({ user_id: "late", op: "+", day: "2025-07-02" });
  assert.equal(single.ingested, 1);
});

test("a DAU release carries its interval and guarantee, and is never re-drawn", async () => {
  const first = await dp.dau(DAY);
  assert.equal(first.metric, "dau");
  assert.ok(first.lower_95 <= first.estimate && first.estimate <= first.upper_95);
  assert.ok(first.epsilon_used > 0 && first.guarantee.length > 0);
  assert.deepEqual(await dp.dau(DAY), first);
});

test("MAU of a window, the series and the budget", async () => {
  const mau = await dp.mau("2025-07-02", 7);
  assert.equal(mau.metric, "mau");
  assert.equal(mau.window, 7);
  const page = await dp.series({ metric: "dau" });
  assert.ok(Array.isArray(page.points));
  assert.equal(typeof page.total, "number");
  const budget = await dp.budget();
  const july = budget.periods.find((p) => p.accounting_period === "2025-07");
  assert.ok(july, JSON.stringify(budget));
  assert.ok(budget.lifetime.epsilon_spent > 0 && budget.delta > 0);
});

test("erasure and its status", async () => {
  const receipt = await dp.erase("u1");
  assert.ok(receipt.erasure_id);
  const status = await dp.erasureStatus(receipt.erasure_id);
  assert.equal(status.erasure_id, receipt.erasure_id);
  assert.ok(["pending", "applied", "purged"].includes(status.status));
});

test("errors arrive as DpDauError with the server's JSON body", async () => {
  await assert.rejects(dp.dau("2025-02-30"), (err) => {
    assert.ok(err instanceof DpDauError);
    assert.equal(err.status, 400);
    assert.equal(err.body.error, "invalid_date");
    return true;
  });
  await assert.rejects(dp.dau("2999-01-01"), (err) => {
    assert.ok(isNotClosed(err) && !isBudgetRefused(err));
    assert.ok(new Date(err.body.closes_at) > new Date("2999-01-01T00:00:00Z"));
    return true;
  });
  await assert.rejects(dp.dau("2025-02-30"), (err) => !isNotClosed(err) && !isBudgetRefused(err));
  const anonymous = new DpDauClient({ baseUrl: server.url });
  await assert.rejects(anonymous.budget(), (err) => err instanceof DpDauError && err.status === 401);
});
