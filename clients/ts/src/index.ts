/**
 * A thin typed `fetch` client for the dp-dau-mau HTTP API.
 *
 * Every request and response type is taken from `schema.d.ts`, which `npm run generate` produces
 * from the server's live `/openapi.json` -- so when the API changes, regenerating makes this file
 * fail to compile wherever it no longer matches. No runtime dependency: the platform's `fetch`.
 *
 *   const dp = new DpDauClient({ baseUrl: "http://127.0.0.1:8000", apiKey: process.env.API_KEY });
 *   await dp.ingest([{ user_id: "alice", op: "+", day: "2026-11-02" }], { idempotencyKey: "batch-1" });
 *   const dau = await dp.dau("2026-11-02");   // dau.estimate, dau.lower_95, dau.guarantee, ...
 */
import type { components, paths } from "./schema.js";

type Json<P extends keyof paths, M extends keyof paths[P], S extends number> = paths[P][M] extends {
  responses: infer R;
}
  ? S extends keyof R
    ? R[S] extends { content: { "application/json": infer B } }
      ? B
      : never
    : never
  : never;

type Query<P extends keyof paths, M extends keyof paths[P]> = paths[P][M] extends {
  parameters: { query?: infer Q };
}
  ? NonNullable<Q>
  : never;

export type Schemas = components["schemas"];
export type Event = Schemas["EventIn"];
export type IngestReceipt = Json<"/event", "post", 200>;
export type Release = Json<"/dau/{day}", "get", 200>;
export type SeriesPage = Json<"/series", "get", 200>;
export type SeriesQuery = Omit<Query<"/series", "get">, "format">;
export type Budget = Json<"/budget", "get", 200>;
export type BudgetQuery = Query<"/budget", "get">;
export type ErasureReceipt = Json<"/erasure", "post", 202>;
export type ErrorBody = Schemas["ErrorOut"] & Record<string, unknown>;
/** 429 `budget_exhausted`: the period (and cap) a release would push over; nothing was charged. */
export type BudgetRefused = Schemas["BudgetRefusedOut"];
/** 409 `period_not_closed`: the day has not closed; `closes_at` says when it does. */
export type NotClosed = Schemas["NotClosedOut"];

/** The refusal body of a release the budget cannot afford (narrows `DpDauError.body`). */
export function isBudgetRefused(err: unknown): err is DpDauError & { body: BudgetRefused } {
  return err instanceof DpDauError && err.status === 429 && err.body.error === "budget_exhausted";
}

/** The refusal body of a release asked for before its day closed (narrows `DpDauError.body`). */
export function isNotClosed(err: unknown): err is DpDauError & { body: NotClosed } {
  return err instanceof DpDauError && err.status === 409 && err.body.error === "period_not_closed";
}

/** A 4xx/5xx answer: `status`, the server's JSON error body, and Retry-After (s) when given. */
export class DpDauError extends Error {
  constructor(
    readonly status: number,
    readonly body: ErrorBody,
    readonly retryAfter: number | null,
  ) {
    super(`${status} ${body.error}: ${body.detail}`);
    this.name = "DpDauError";
  }
}

export interface ClientOptions {
  /** e.g. http://127.0.0.1:8000 */
  baseUrl: string;
  /** sent as X-API-Key (a key with the scope the call needs) */
  apiKey?: string;
  /** defaults to the global fetch (Node >= 18, browsers) */
  fetch?: typeof fetch;
}

export class DpDauClient {
  private readonly base: string;
  private readonly fetchImpl: typeof fetch;

  constructor(private readonly options: ClientOptions) {
    this.base = options.baseUrl.replace(/\/+$/, "");
    this.fetchImpl = options.fetch ?? globalThis.fetch;
  }

  /** POST /event: one event or a batch; resolves once durable. Reuse `idempotencyKey` to retry safely. */
  async ingest(events: Event | Event[], opts: { idempotencyKey?: string } = {}): Promise<IngestReceipt> {
    const body = Array.isArray(events) ? { events } : events;
    const headers = opts.idempotencyKey ? { "Idempotency-Key": opts.idempotencyKey } : undefined;
    return this.request<IngestReceipt>("POST", "/event", { body, headers });
  }

  /** GET /dau/{day}: the release of a closed day (YYYY-MM-DD). */
  async dau(day: string): Promise<Release> {
    return this.request<Release>("GET", `/dau/${encodeURIComponent(day)}`);
  }

  /** GET /mau: the release of the window of `window` days (default MAU_WINDOW_DAYS) ending on `end`. */
  async mau(end: string, window?: number): Promise<Json<"/mau", "get", 200>> {
    return this.request("GET", "/mau", { query: { end, window } });
  }

  /** GET /series: the published series of a metric, paged (JSON). */
  async series(query: SeriesQuery): Promise<SeriesPage> {
    return this.request<SeriesPage>("GET", "/series", { query: { ...query, format: "json" } });
  }

  /** GET /budget: epsilon spent and left per metric and accounting period. */
  async budget(query: BudgetQuery = {} as BudgetQuery): Promise<Budget> {
    return this.request<Budget>("GET", "/budget", { query });
  }

  /** POST /erasure: erase a user everywhere; the receipt's id follows it to "purged". */
  async erase(userId: string): Promise<ErasureReceipt> {
    return this.request<ErasureReceipt>("POST", "/erasure", { body: { user_id: userId } });
  }

  /** GET /erasure/{id}: pending -> applied -> purged. */
  async erasureStatus(erasureId: string): Promise<Json<"/erasure/{erasure_id}", "get", 200>> {
    return this.request("GET", `/erasure/${encodeURIComponent(erasureId)}`);
  }

  private async request<T>(
    method: "GET" | "POST",
    path: string,
    init: { body?: unknown; query?: object; headers?: Record<string, string> } = {},
  ): Promise<T> {
    const url = new URL(this.base + path);
    for (const [k, v] of Object.entries(init.query ?? {})) {
      if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
    }
    const headers: Record<string, string> = { Accept: "application/json", ...init.headers };
    if (this.options.apiKey) headers["X-API-Key"] = this.options.apiKey;
    if (init.body !== undefined) headers["Content-Type"] = "application/json";
    const res = await this.fetchImpl(url, {
      method,
      headers,
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    });
    const text = await res.text();
    const parsed: unknown = text ? JSON.parse(text) : {};
    if (!res.ok) {
      const retry = res.headers.get("Retry-After");
      throw new DpDauError(res.status, parsed as ErrorBody, retry === null ? null : Number(retry));
    }
    return parsed as T;
  }
}
