"""Pseudonymisation: raw user ids stop here.

Rules:
1. key(user_id) = first 8 bytes of HMAC-SHA256(secret, utf-8 user_id), read as a *signed*
   little-endian int64 (datasketches would hash an unsigned value >= 2^63 as a double).
2. Salt rotation never changes a count: stored keys are re-keyed k -> HMAC(new, k) (same
   8-byte signed reading), and new ids go through the whole chain
   HMAC(s_n, ... HMAC(s_1, HMAC(s_0, id))). A user seen before and after a rotation is one key.
3. The base secret is ``HASH_SALT_SECRET``; in development, if unset, 32 random bytes are
   generated once into ``DATA_DIR/secret`` (mode 0600) so a restart never changes keys. With
   ``DPDAU_ENV=production`` a missing secret refuses to start. Rotation secrets live in
   ``DATA_DIR/keyring`` (0600); the journal records how many rotations it has seen
   (``key_version``) and a mismatch refuses to start rather than silently mint new users.
4. No raw user id is written anywhere (disk, logs, metrics). The in-memory cache of recent ids
   makes repeat users cheap and is never persisted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MIN_SECRET_BYTES = 16


class IdentityError(Exception):
    pass


def _key_bytes(secret: bytes, message: bytes) -> int:
    return int.from_bytes(hmac.digest(secret, message, hashlib.sha256)[:8], "little", signed=True)


def rekey(secret: bytes, keys: np.ndarray) -> np.ndarray:
    """k -> HMAC(secret, k) for stored keys (rule 2); vectorised over a key array."""
    digest = hmac.digest
    out = [
        int.from_bytes(digest(secret, k.to_bytes(8, "little", signed=True), hashlib.sha256)[:8], "little", signed=True)
        for k in keys.tolist()
    ]
    return np.array(out, dtype=np.int64)


class Pseudonymizer:
    def __init__(self, base: bytes, rotations: Sequence[bytes] = (), cache_size: int = 1_000_000) -> None:
        if len(base) < MIN_SECRET_BYTES:
            raise IdentityError(f"HASH_SALT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        self._base = base
        self._rotations = list(rotations)
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._cache_size = cache_size

    @property
    def key_version(self) -> int:
        return len(self._rotations)

    def key(self, user_id: str) -> int:
        cached = self._cache.get(user_id)
        return cached if cached is not None else self._derive(user_id)

    def _derive(self, user_id: str) -> int:
        k = _key_bytes(self._base, user_id.encode("utf-8"))
        for secret in self._rotations:
            k = _key_bytes(secret, k.to_bytes(8, "little", signed=True))
        if self._cache_size:
            self._cache[user_id] = k
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)  # oldest first: a bounded FIFO is enough here
        return k

    def keys(self, user_ids: Sequence[str]) -> np.ndarray:
        """Vectorised over a batch: cache hits cost one dict lookup each (the ingest hot path)."""
        get, derive = self._cache.get, self._derive
        out = [get(u) for u in user_ids]
        if None in out:
            out = [k if k is not None else derive(u) for k, u in zip(out, user_ids)]
        return np.array(out, dtype=np.int64)


# -- secrets on disk -----------------------------------------------------------------------


def _write_private(path: Path, data: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def base_secret(data_dir: Path, configured: str | None, production: bool) -> bytes:
    if configured:
        return configured.encode("utf-8")
    if production:
        raise IdentityError(
            "HASH_SALT_SECRET is required when DPDAU_ENV=production (it keys every pseudonym; "
            "keep it in your secret store and back it up)"
        )
    path = Path(data_dir) / "secret"
    if not path.exists():
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        _write_private(path, secrets.token_hex(32))
    return path.read_text().strip().encode("utf-8")


def keyring_path(data_dir: Path) -> Path:
    return Path(data_dir) / "keyring"


def load_rotations(data_dir: Path) -> list[bytes]:
    path = keyring_path(data_dir)
    if not path.exists():
        return []
    return [bytes.fromhex(h) for h in json.loads(path.read_text())["rotations"]]


def save_rotations(data_dir: Path, rotations: list[bytes], *, suffix: str = "") -> Path:
    path = keyring_path(data_dir).with_name("keyring" + suffix)
    _write_private(path, json.dumps({"rotations": [r.hex() for r in rotations]}))
    return path


def finish_pending_rotation(data_dir: Path, journal_key_version: int) -> None:
    """Crash recovery for rotate-salt: keep ``keyring.new`` iff the journal committed it."""
    pending = keyring_path(data_dir).with_name("keyring.new")
    if not pending.exists():
        return
    rotations = json.loads(pending.read_text())["rotations"]
    if len(rotations) == journal_key_version:
        os.replace(pending, keyring_path(data_dir))
    else:
        pending.unlink()


def open_pseudonymizer(
    data_dir: Path, configured: str | None, production: bool, journal_key_version: int, cache_size: int = 1_000_000
) -> Pseudonymizer:
    finish_pending_rotation(data_dir, journal_key_version)
    rotations = load_rotations(data_dir)
    if len(rotations) != journal_key_version:
        raise IdentityError(
            f"the journal was re-keyed {journal_key_version} time(s) but {keyring_path(data_dir)} holds "
            f"{len(rotations)} rotation secret(s); restore the keyring from backup (new ids would not match old users)"
        )
    return Pseudonymizer(base_secret(data_dir, configured, production), rotations, cache_size)
