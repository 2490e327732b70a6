"""The internal route between the processes of a sharded deployment (``actors/system/cuts.py``).

Rules:
1. ``POST /internal/cut`` is served by shards only. It answers *exact* counts of a shard's users --
   never a release -- so no API key opens it: it is guarded by a key no API client holds,
   HMAC-SHA256(the pseudonymisation secret, ``INTERNAL_LABEL``), which every process of a
   deployment derives from the secret it must share anyway (or they would pseudonymise apart),
   sent as ``X-Internal-Key`` and compared in constant time. Bind shards to an internal interface
   as well; the route is refused everywhere else (404).
2. The body names the cut and its position; with ``keys`` it asks how many of them the shard's
   union at the cut holds (erasures journaled after the cut, cuts rule 4). A shard that cannot
   answer at that cut says ``409 cut_unavailable``.
3. ``HttpShardClient`` is the coordinator's side: one aiohttp session, a deadline per call. Any
   failure -- refused connection, a 409, a timeout, a bad answer -- is ``ShardsUnavailable``: the
   release is abandoned (nothing published or charged) and the client retries it (503). Its text
   names the shard's internal address, for the log only: ``ShardCounter`` (cuts rule 6) logs it
   and answers the reader with the shard's index.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import msgspec
from aiohttp import web

from actors.refusals import ShardsUnavailable
from gateway.identity import base_secret

INTERNAL_LABEL = b"dpdau/internal-route/v1"
HEADER = "X-Internal-Key"
CALL_SECONDS = 60.0  # a shard may have to reach the cut first (cuts.CUT_WAIT_SECONDS) and union


class CutQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cut_id: str
    seq: int
    keys: list[int] | None = None


class CutAnswer(msgspec.Struct, frozen=True):
    count: int


_query = msgspec.json.Decoder(CutQuery)
_answer = msgspec.json.Decoder(CutAnswer)


def internal_key(data_dir: Path, configured_secret: str | None, production: bool) -> str:
    """Rule 1: the key every process of a deployment derives from the shared secret."""
    return hmac.digest(base_secret(data_dir, configured_secret, production), INTERNAL_LABEL, hashlib.sha256).hex()


def authorised(request: web.Request, key: str) -> bool:
    return hmac.compare_digest(request.headers.get(HEADER, "").encode(), key.encode())


def decode_query(body: bytes) -> CutQuery:
    return _query.decode(body)


class HttpShardClient:
    """Rule 3 (``actors.system.cuts.ShardClient``)."""

    def __init__(self, key: str) -> None:
        self._key = key
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def count(self, address: str, cut_id: str, seq: int) -> int:
        return await self._ask(address, CutQuery(cut_id, seq))

    async def among(self, address: str, cut_id: str, seq: int, keys: Sequence[int]) -> int:
        return await self._ask(address, CutQuery(cut_id, seq, list(keys)))

    async def _ask(self, address: str, query: CutQuery) -> int:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_SECONDS))
        url = address.rstrip("/") + "/internal/cut"
        try:
            async with self._session.post(
                url, data=msgspec.json.encode(query), headers={HEADER: self._key, "Content-Type": "application/json"}
            ) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise ShardsUnavailable(f"shard at {address} answered {resp.status} for cut {query.cut_id}")
                return _answer.decode(body).count
        except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError) as exc:
            raise ShardsUnavailable(f"shard at {address} did not answer: {exc!r}") from None
