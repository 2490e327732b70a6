"""Schemathesis hooks for ``tests/e2e/test_openapi_fuzz.py``: the fuzzing client keeps the one
promise a schema cannot state.

An ``Idempotency-Key`` names *one* request: a client that sends a different batch under a key it
already used gets ``422 idempotency_key_reused`` (the IETF idempotency-key draft's answer), however
valid both batches are. Schemathesis draws header values independently of bodies, so it reuses
keys; this hook derives the key from (drawn key, body), so equal requests keep equal keys (and
get the first answer, ``Idempotent-Replayed``) and different requests get different keys -- what
a correct client does. Nothing else is changed.
"""

from __future__ import annotations

import hashlib
import json

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):  # type: ignore[no-untyped-def]
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if not isinstance(key, str):
        return
    raw = json.dumps(case.body, sort_keys=True, default=str).encode() if case.body is not None else b""
    headers["Idempotency-Key"] = f"{key[:200]}-{hashlib.sha256(raw + key.encode()).hexdigest()[:16]}"
    case.headers = headers
