"""Snapshot files: an optimisation that must never be trusted blindly.

Rules:
1. A snapshot is ``header || payload``; the header carries a magic, the container format
   version, the payload schema version (owned by whoever builds the payload), the journal id,
   the journal *epoch* and position it reflects, and the SHA-256 of the payload.
2. Loading verifies all of it. A file that is truncated, has a wrong checksum, an unknown
   version, belongs to another journal (or to a position past the journal's head), or to another
   epoch of this journal (``journal.store`` rule 5: the journal was rewritten -- a purge, a
   shredding, a salt rotation -- after it was taken) is skipped with a logged reason; the caller
   then falls back to an older snapshot or to full replay. The epoch is read by the caller
   *before* it captures the state, so a rewrite that commits during a capture only ever makes
   the snapshot stale, never the reverse.
3. Writes are atomic: temp file, fsync, rename, fsync of the directory. A crash mid-write leaves
   the previous snapshot intact.
4. Snapshot files hold pseudonyms; erasure compaction and salt rotation delete every snapshot
   they make stale and write a fresh one; ``sweep`` deletes what a crash left behind (files of
   another epoch, temp files of an interrupted write).
"""

from __future__ import annotations

import builtins
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import structlog

from journal import faults

log = structlog.get_logger("journal.snapshots")

MAGIC = b"DPDAUSNP"
CONTAINER_VERSION = 2  # 2: the journal epoch in the header (1 had none: never trusted, see rule 2)
# magic, container v, payload v, last_seq, journal id, journal epoch, payload length, sha256
_HEADER = struct.Struct("<8sHHQ32sQQ32s")


@dataclass(frozen=True)
class SnapshotInfo:
    path: Path
    last_seq: int
    payload_version: int
    epoch: int = 0


class SnapshotStore:
    def __init__(self, directory: Path | str, *, keep: int = 2) -> None:
        self.directory = Path(directory)
        self.keep = keep
        self.rejected = 0  # files load_latest skipped (a metric: corrupt, truncated, foreign, ...)

    def save(self, payload: bytes, *, last_seq: int, journal_id: str, payload_version: int, epoch: int = 0) -> Path:
        """``epoch``: the journal's epoch read before the state was captured (rule 2)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        header = _HEADER.pack(
            MAGIC,
            CONTAINER_VERSION,
            payload_version,
            last_seq,
            journal_id.encode().ljust(32, b"\0")[:32],
            epoch,
            len(payload),
            hashlib.sha256(payload).digest(),
        )
        final = self.directory / f"snapshot-{last_seq:020d}.snap"
        tmp = final.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(header)
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            faults.hit("snapshot.before_rename")
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a half-written file (disk full) must not linger
            raise
        _fsync_dir(self.directory)
        self.prune()
        return final

    def load_latest(
        self, *, journal_id: str, head: int, payload_version: int, epoch: int = 0
    ) -> tuple[SnapshotInfo, bytes] | None:
        """Newest snapshot that passes every check (rule 2), or None."""
        for path in sorted(self._files(), reverse=True):
            try:
                info, payload = self._read(path, journal_id, head, payload_version, epoch)
            except (OSError, ValueError) as exc:
                self.rejected += 1
                log.warning("snapshot_skipped", file=path.name, reason=str(exc))
                continue
            return info, payload
        return None

    def check(self, path: Path, *, journal_id: str, head: int, payload_version: int, epoch: int = 0) -> SnapshotInfo:
        """Raise ValueError saying why ``path`` would not be trusted (rule 2)."""
        return self._read(Path(path), journal_id, head, payload_version, epoch)[0]

    def _read(
        self, path: Path, journal_id: str, head: int, want_version: int, want_epoch: int
    ) -> tuple[SnapshotInfo, bytes]:
        data = path.read_bytes()
        if len(data) < _HEADER.size:
            raise ValueError("truncated header")
        magic, cver, pver, last_seq, jid, epoch, length, digest = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ValueError("not a snapshot file")
        if cver != CONTAINER_VERSION or pver != want_version:
            raise ValueError(f"unknown format version {cver}/{pver}")
        if jid.rstrip(b"\0").decode(errors="replace") != journal_id:
            raise ValueError("snapshot of a different journal")
        if epoch != want_epoch:
            raise ValueError(
                f"stale: taken at journal epoch {epoch}, the journal is at epoch {want_epoch} "
                "(rewritten since by a purge, a shredding or a salt rotation)"
            )
        if last_seq > head:
            raise ValueError(f"snapshot at seq {last_seq} is ahead of the journal head {head}")
        payload = data[_HEADER.size :]
        if len(payload) != length:
            raise ValueError("truncated payload")
        if hashlib.sha256(payload).digest() != digest:
            raise ValueError("checksum mismatch")
        return SnapshotInfo(path, last_seq, pver, epoch), payload

    def _files(self) -> list[Path]:
        if not self.directory.exists():
            return []
        return [p for p in self.directory.iterdir() if p.suffix == ".snap"]

    def list(self) -> list[Path]:
        return sorted(self._files())

    def prune(self) -> None:
        for path in sorted(self._files(), reverse=True)[self.keep :]:
            path.unlink(missing_ok=True)

    def sweep(self, *, journal_id: str, epoch: int) -> builtins.list[str]:
        """Delete what no load could ever use again and what may hold purged pseudonyms: files of
        this journal at another epoch, files of an older container format, and temp files of an
        interrupted write (rule 4). Unreadable or foreign files are left for an operator."""
        if not self.directory.exists():
            return []
        removed = []
        for path in sorted(self.directory.iterdir()):
            if path.suffix == ".tmp":
                stale = True
            elif path.suffix != ".snap":
                continue
            else:
                try:
                    with open(path, "rb") as fh:
                        head = fh.read(_HEADER.size)
                except OSError:
                    continue
                if len(head) < 10 or head[:8] != MAGIC:
                    continue
                (cver,) = struct.unpack_from("<H", head, 8)
                if cver != CONTAINER_VERSION or len(head) < _HEADER.size:
                    stale = cver < CONTAINER_VERSION  # an older format can never be trusted again
                else:
                    _, _, _, _, jid, file_epoch, _, _ = _HEADER.unpack_from(head)
                    stale = jid.rstrip(b"\0").decode(errors="replace") == journal_id and file_epoch != epoch
            if stale:
                path.unlink(missing_ok=True)
                removed.append(path.name)
        if removed:
            _fsync_dir(self.directory)
            log.info("snapshots_swept", files=removed, epoch=epoch)
        return removed

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
