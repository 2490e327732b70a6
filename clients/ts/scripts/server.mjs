// Start and stop the real dp-dau-mau server (`python -m gateway.cli serve`) for the generator and
// the tests: 127.0.0.1, a free port, a throwaway DATA_DIR, stopped by PID. Plain ESM, no deps.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, existsSync, openSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

// Settings that would change the OpenAPI document or the answers are cleared, then fixed here.
const CLEARED = /^(API_KEY|[A-Z]+_API_KEY|DATA_DIR|JOURNAL_URL|HOST|PORT|RELEASE_SCHEDULE|DPDAU_ENV|HASH_SALT_SECRET)$/;

export function python() {
  if (process.env.DPDAU_PYTHON) return process.env.DPDAU_PYTHON;
  const venv = join(REPO, ".venv", "bin", "python");
  if (!existsSync(venv)) throw new Error(`no ${venv}: run \`make setup\` at the repository root (or set DPDAU_PYTHON)`);
  return venv;
}

export function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

/** Start the server; resolves once /readyz answers 200. `env` adds settings (e.g. API keys). */
export async function startServer(env = {}, { timeoutMs = 90_000 } = {}) {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), "dpdau-ts-"));
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !CLEARED.test(k)));
  const logPath = join(dataDir, "..", `${dataDir.split("/").pop()}.log`);
  const log = openSync(logPath, "a");
  const child = spawn(python(), ["-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", String(port)], {
    cwd: REPO,
    env: { ...base, DATA_DIR: join(dataDir, "data"), LOG_LEVEL: "warning", RELEASE_SCHEDULE: "on-demand", ...env },
    stdio: ["ignore", log, log],
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) {
      throw new Error(`server exited with ${child.exitCode}:\n${readFileSync(logPath, "utf8")}`);
    }
    try {
      const headers = env.API_KEY ? { "X-API-Key": env.API_KEY } : {};
      const res = await fetch(`${url}/readyz`, { headers, signal: AbortSignal.timeout(2000) });
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`server not ready after ${timeoutMs} ms:\n${readFileSync(logPath, "utf8")}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    port,
    pid: child.pid,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        process.kill(child.pid, "SIGTERM");
        await exited;
      }
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(logPath, { force: true });
    },
  };
}
