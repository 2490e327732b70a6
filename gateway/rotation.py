"""``dpdau rotate-salt``: a new pseudonymisation secret, and not a single count changes.

Procedure (crash-safe at every step):
1. write the extended keyring to ``keyring.new`` (0600);
2. re-key the journal in one transaction that also records the new ``key_version``
   (``journal.rekey``), counter-run tokens of purged erasures included
   (``flippancy.rekey_tombstone``); refused, with nothing changed, while a run journaled with
   one-way tokens is in progress;
3. promote ``keyring.new`` to ``keyring`` -- on a crash between 2 and 3, the next start sees
   the journal's version and finishes (or discards) the pending keyring itself
   (``identity.finish_pending_rotation``);
4. delete every snapshot (they hold old keys) and write a fresh one from a full replay.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from actors.privacy import flippancy
from actors.system import maintenance, restore_world
from gateway import identity
from gateway.config import Config
from journal.rekey import rekey


async def rotate(cfg: Config) -> dict[str, Any]:
    data_dir = cfg.data_dir
    spec = cfg.journal
    async with maintenance.opened(spec) as journal:
        identity.finish_pending_rotation(data_dir, journal.key_version)
        current = identity.open_pseudonymizer(
            data_dir, cfg.gateway.hash_salt_secret, cfg.gateway.production, journal.key_version
        )
        rotations = identity.load_rotations(data_dir)
        new_secret = secrets.token_bytes(32)
        identity.save_rotations(data_dir, [*rotations, new_secret], suffix=".new")
        pending = identity.keyring_path(data_dir).with_name("keyring.new")
        try:
            rewritten = await rekey(
                journal,
                lambda keys: identity.rekey(new_secret, keys),
                current.key_version + 1,
                retombstone=flippancy.rekey_tombstone,  # counter-run tokens follow their keys
            )
        except flippancy.CannotRekey:
            pending.unlink(missing_ok=True)  # the journal rolled back: nothing was rotated
            raise
        os.replace(identity.keyring_path(data_dir).with_name("keyring.new"), identity.keyring_path(data_dir))
        removed = spec.snapshot_store().delete_all()
        world, _ = await restore_world(journal, None, cfg.engine, use_snapshot=False)
        path = maintenance.write_snapshot(journal, world, spec, replace_all=True)
        return {
            "key_version": journal.key_version,
            "keys_rewritten": rewritten,
            "snapshots_replaced": removed,
            "snapshot": str(path),
            "keep_secret": [str(identity.keyring_path(data_dir)), "HASH_SALT_SECRET (or DATA_DIR/secret)"],
        }
