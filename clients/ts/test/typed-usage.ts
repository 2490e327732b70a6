// Compile-time checks (tsc --noEmit, never run): the generated types say what a release, a
// receipt and a series point hold. When the API changes, `npm run generate` makes these fail.
import {
  DpDauClient,
  DpDauError,
  isBudgetRefused,
  isNotClosed,
  type BudgetRefused,
  type Release,
  type SeriesPage,
} from "../src/index.js";

export async function usage(dp: DpDauClient): Promise<string[]> {
  const r: Release = await dp.dau("2026-11-02");
  const interval: number[] = [r.lower_95, r.estimate, r.upper_95];
  const cost: number = r.epsilon_used + r.delta + r.budget_remaining;
  const words: string = r.guarantee + r.mechanism + r.accounting_period;
  // @ts-expect-error -- an exact count is never part of a release
  void r.exact_count;
  const page: SeriesPage = await dp.series({ metric: "mau", from: "2026-11-01" });
  // @ts-expect-error -- metric is dau or mau
  await dp.series({ metric: "wau" });
  // @ts-expect-error -- an event needs a user_id, an op and a day
  await dp.ingest({ user_id: "alice" });
  const receipt = await dp.erase("alice");
  const budget = await dp.budget({ periods: 3 });
  const spent: number = budget.lifetime.epsilon_spent + budget.caps.period_total;
  const statement: string = budget.statement + String(budget.composition?.epsilon ?? spent);
  try {
    await dp.mau("2026-11-30", 7);
  } catch (err) {
    if (isBudgetRefused(err)) {
      const period: string | null = err.body.accounting_period; // null: the lifetime limit
      const after: number = err.body.epsilon_after_release - err.body.epsilon_cap;
      // @ts-expect-error -- the cap is one of the four settings, not any string
      const wrong: BudgetRefused["cap"] = "EPSILON_DAU";
      void wrong;
      return [String(period), err.body.cap, String(after), String(err.body.next_reset)];
    }
    if (isNotClosed(err)) return [err.body.closes_at];
    if (err instanceof DpDauError && err.status === 429) return [String(err.body.error)];
  }
  return [words, statement, receipt.erasure_id, String(page.total), String(interval.length + cost)];
}
