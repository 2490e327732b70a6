"""One process at a time per data directory and role (the server, a worker or shard of a
deployment, or an offline maintenance command, which takes the plain ``.lock``)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DataDirBusy(Exception):
    pass


class DataDirLock:
    def __init__(self, data_dir: Path | str, role: str = "") -> None:
        self.path = Path(data_dir) / (f".lock-{role}" if role else ".lock")
        self.holder = f"the {role} of a deployment" if role else "the server?"
        self._fd: int | None = None

    def __enter__(self) -> DataDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise DataDirBusy(
                f"{self.path.parent} is in use by another dpdau process ({self.holder}); stop it first"
            ) from exc
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
