"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams.

aiohttp's client costs more CPU per request than the server under test on this 2-core machine,
so the benchmarks drive the server with pre-encoded requests over persistent connections and
parse only the status line and Content-Length of each response.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def request_bytes(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: keep-alive"]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Result:
    requests: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))]


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body


async def run(
    port: int,
    make_request: Callable[[int, int], bytes],
    *,
    connections: int,
    requests_per_connection: int | None = None,
    duration: float | None = None,
) -> Result:
    """``make_request(connection, i)`` builds request i of a connection; stops on count or time."""
    result = Result()
    deadline = None if duration is None else time.perf_counter() + duration

    async def worker(c: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = 0
        try:
            while True:
                if requests_per_connection is not None and i >= requests_per_connection:
                    break
                if deadline is not None and time.perf_counter() >= deadline:
                    break
                payload = make_request(c, i)
                started = time.perf_counter()
                writer.write(payload)
                status, _ = await _read_response(reader)
                result.latencies.append(time.perf_counter() - started)
                result.requests += 1
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status >= 400:
                    result.errors += 1
                i += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in range(connections)))
    result.seconds = time.perf_counter() - started
    return result
