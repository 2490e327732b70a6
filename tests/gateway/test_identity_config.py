"""Pseudonyms, secrets on disk, and configuration errors that name the variable."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat

import numpy as np
import pytest

from gateway import config as config_mod
from gateway import identity


def test_key_is_signed_int64_of_hmac_sha256():
    p = identity.Pseudonymizer(b"0123456789abcdef")
    expected = int.from_bytes(hmac.digest(b"0123456789abcdef", b"alice", hashlib.sha256)[:8], "little", signed=True)
    assert p.key("alice") == expected
    keys = p.keys([f"user-{i}" for i in range(2000)])
    assert keys.dtype == np.int64 and (keys < 0).any() and (keys > 0).any()
    assert len(set(keys.tolist())) == 2000
    assert p.key("alice") == p.key("alice")  # cached or not, stable


def test_rotation_chain_keeps_a_user_one_key():
    base, new = b"base-secret-0123456", b"rotation-secret-789"
    before = identity.Pseudonymizer(base)
    after = identity.Pseudonymizer(base, [new])
    ids = ["a", "b", "ccc", "✓ unicode"]
    stored = before.keys(ids)
    assert identity.rekey(new, stored).tolist() == after.keys(ids).tolist()
    assert identity.rekey(new, stored).tolist() != stored.tolist()


def test_short_secret_is_refused():
    with pytest.raises(identity.IdentityError):
        identity.Pseudonymizer(b"short")


def test_development_secret_is_generated_once_with_mode_0600(tmp_path):
    first = identity.base_secret(tmp_path, None, production=False)
    assert stat.S_IMODE(os.stat(tmp_path / "secret").st_mode) == 0o600
    assert identity.base_secret(tmp_path, None, production=False) == first and len(first) >= 32


def test_production_without_secret_refuses_to_start(tmp_path):
    with pytest.raises(identity.IdentityError, match="HASH_SALT_SECRET is required"):
        identity.base_secret(tmp_path, None, production=True)
    assert not (tmp_path / "secret").exists()
    assert identity.base_secret(tmp_path, "configured-secret-xyz", production=True) == b"configured-secret-xyz"


def test_keyring_mismatch_refuses_rather_than_minting_new_users(tmp_path):
    with pytest.raises(identity.IdentityError, match="re-keyed 1 time"):
        identity.open_pseudonymizer(tmp_path, "configured-secret-xyz", False, journal_key_version=1)
    identity.save_rotations(tmp_path, [b"r" * 32])
    assert stat.S_IMODE(os.stat(identity.keyring_path(tmp_path)).st_mode) == 0o600
    assert identity.open_pseudonymizer(tmp_path, "configured-secret-xyz", False, 1).key_version == 1


def test_pending_keyring_is_kept_only_if_the_journal_committed_it(tmp_path):
    identity.save_rotations(tmp_path, [b"a" * 32], suffix=".new")
    identity.finish_pending_rotation(tmp_path, journal_key_version=0)  # crash before the commit
    assert identity.load_rotations(tmp_path) == []
    identity.save_rotations(tmp_path, [b"a" * 32], suffix=".new")
    identity.finish_pending_rotation(tmp_path, journal_key_version=1)  # crash after it
    assert identity.load_rotations(tmp_path) == [b"a" * 32]


def test_config_reads_env_over_dotenv_and_names_bad_variables(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("EPSILON_DAU=0.7\nPORT=9001\n# comment\nexport TIMEZONE='Europe/Paris'\n")
    cfg = config_mod.load(environ={"PORT": "9002"}, dotenv=dotenv)
    assert cfg.engine.epsilon_dau == 0.7 and cfg.gateway.port == 9002 and cfg.engine.timezone == "Europe/Paris"
    for env, needle in [
        ({"EPSILON_DAU": "abc"}, "EPSILON_DAU"),
        ({"EPSILON_DAU": "-1"}, "EPSILON_DAU"),
        ({"W_BOUND": "3"}, "W_BOUND"),
        ({"DAU_MECHANISM": "magic"}, "DAU_MECHANISM"),
        ({"TIMEZONE": "Mars/Olympus"}, "Mars/Olympus"),
        ({"PORT": "70000"}, "PORT"),
        ({"DPDAU_ENV": "staging"}, "DPDAU_ENV"),
        ({"SKETCH_IMPL": "hll"}, "SKETCH_IMPL"),
        ({"SKETCH_IMPL": "hllpp", "SKETCH_LG_K": "22"}, "SKETCH_LG_K.*hllpp"),
        ({"SKETCH_IMPL": "theta", "SKETCH_LG_K": "4"}, "SKETCH_LG_K.*theta"),
        ({"THETA_LG_K": "14"}, "THETA_LG_K was renamed SKETCH_LG_K"),
    ]:
        with pytest.raises(config_mod.ConfigError, match=needle):
            config_mod.load(environ=env, dotenv=None)


def test_defaults_are_the_product_defaults():
    cfg = config_mod.load(environ={}, dotenv=None)
    e = cfg.engine
    assert (e.epsilon_dau, e.epsilon_mau, e.delta, e.w_bound, e.mau_window_days, e.timezone) == (
        0.3,
        0.5,
        1e-6,
        2,
        30,
        "UTC",
    )
    # caps chosen so the default schedule fits every period (tests/actors/test_budget_bound.py)
    assert (e.period_budget_total, e.dau_budget_total, e.mau_budget_total, e.privacy_period) == (5.5, 3.0, 5.0, "month")
    assert e.user_epsilon_limit is None  # the lifetime bound is off by default
    assert (cfg.gateway.host, cfg.gateway.port, cfg.gateway.data_dir) == ("127.0.0.1", 8000, "./data")
    assert not any("seed" in f for f in type(e).__struct_fields__)  # the service takes no seed
