"""Snapshot files: an optimisation that must never be trusted blindly.

Rules:
1. A snapshot is ``header || payload``; the header carries a magic, the container format
   version, the payload schema version (owned by whoever builds the payload), the journal id and
   the journal position it reflects, and the SHA-256 of the payload.
2. Loading verifies all of it. A file that is truncated, has a wrong checksum, an unknown
   version, or belongs to another journal (or to a position past the journal's head) is skipped
   with a logged reason -- the caller then falls back to an older snapshot or to full replay.
3. Writes are atomic: temp file, fsync, rename, fsync of the directory. A crash mid-write leaves
   the previous snapshot intact.
4. Snapshot files hold pseudonyms; erasure compaction and salt rotation delete every snapshot
   they make stale (``delete_all``) and write a fresh one.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger("journal.snapshots")

MAGIC = b"DPDAUSNP"
CONTAINER_VERSION = 1
_HEADER = struct.Struct("<8sHHQ32sQ32s")  # magic, container v, payload v, last_seq, journal id, len, sha256


@dataclass(frozen=True)
class SnapshotInfo:
    path: Path
    last_seq: int
    payload_version: int


class SnapshotStore:
    def __init__(self, directory: Path | str, *, keep: int = 2) -> None:
        self.directory = Path(directory)
        self.keep = keep

    def save(self, payload: bytes, *, last_seq: int, journal_id: str, payload_version: int) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        header = _HEADER.pack(
            MAGIC,
            CONTAINER_VERSION,
            payload_version,
            last_seq,
            journal_id.encode().ljust(32, b"\0")[:32],
            len(payload),
            hashlib.sha256(payload).digest(),
        )
        final = self.directory / f"snapshot-{last_seq:020d}.snap"
        tmp = final.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(header)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.directory)
        self.prune()
        return final

    def load_latest(self, *, journal_id: str, head: int, payload_version: int) -> tuple[SnapshotInfo, bytes] | None:
        """Newest snapshot that passes every check (rule 2), or None."""
        for path in sorted(self._files(), reverse=True):
            try:
                info, payload = self._read(path, journal_id, head, payload_version)
            except (OSError, ValueError) as exc:
                log.warning("snapshot_skipped", file=path.name, reason=str(exc))
                continue
            return info, payload
        return None

    def check(self, path: Path, *, journal_id: str, head: int, payload_version: int) -> SnapshotInfo:
        """Raise ValueError saying why ``path`` would not be trusted (rule 2)."""
        return self._read(Path(path), journal_id, head, payload_version)[0]

    def _read(self, path: Path, journal_id: str, head: int, want_version: int) -> tuple[SnapshotInfo, bytes]:
        data = path.read_bytes()
        if len(data) < _HEADER.size:
            raise ValueError("truncated header")
        magic, cver, pver, last_seq, jid, length, digest = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ValueError("not a snapshot file")
        if cver != CONTAINER_VERSION or pver != want_version:
            raise ValueError(f"unknown format version {cver}/{pver}")
        if jid.rstrip(b"\0").decode() != journal_id:
            raise ValueError("snapshot of a different journal")
        if last_seq > head:
            raise ValueError(f"snapshot at seq {last_seq} is ahead of the journal head {head}")
        payload = data[_HEADER.size :]
        if len(payload) != length:
            raise ValueError("truncated payload")
        if hashlib.sha256(payload).digest() != digest:
            raise ValueError("checksum mismatch")
        return SnapshotInfo(path, last_seq, pver), payload

    def _files(self) -> list[Path]:
        if not self.directory.exists():
            return []
        return [p for p in self.directory.iterdir() if p.suffix == ".snap"]

    def list(self) -> list[Path]:
        return sorted(self._files())

    def prune(self) -> None:
        for path in sorted(self._files(), reverse=True)[self.keep :]:
            path.unlink(missing_ok=True)

    def delete_all(self) -> int:
        files = self._files() + list(self.directory.glob("*.tmp")) if self.directory.exists() else []
        for path in files:
            path.unlink(missing_ok=True)
        if files:
            _fsync_dir(self.directory)
        return len(files)

    def install(self, source: Path) -> Path:
        """Copy an external snapshot file in (``dpdau restore FILE``); validated on load."""
        self.directory.mkdir(parents=True, exist_ok=True)
        data = Path(source).read_bytes()
        if len(data) < _HEADER.size:
            raise ValueError("not a snapshot file")
        last_seq = _HEADER.unpack_from(data)[3]
        target = self.directory / f"snapshot-{last_seq:020d}.snap"
        tmp = target.with_suffix(".tmp")
        with open(tmp, "wb") as fh:  # same durability as save(): data on disk before the rename
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(self.directory)
        return target


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
