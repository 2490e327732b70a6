"""journal/snapshots.py: checksummed, versioned, journal-bound snapshot files, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from journal.snapshots import _HEADER, CONTAINER_VERSION, MAGIC, SnapshotStore

JID = "0123456789abcdef0123456789abcdef"
OTHER_JID = "fedcba9876543210fedcba9876543210"
V = 3


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "snapshots", keep=2)


def load(store: SnapshotStore, *, head: int = 1_000, jid: str = JID, version: int = V):
    return store.load_latest(journal_id=jid, head=head, payload_version=version)


def corrupt(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_save_load_round_trip(store):
    payload = os.urandom(5_000)
    path = store.save(payload, last_seq=42, journal_id=JID, payload_version=V)
    assert path.exists() and path.parent == store.directory
    assert path.name == f"snapshot-{42:020d}.snap"
    info, got = load(store)
    assert got == payload
    assert (info.path, info.last_seq, info.payload_version) == (path, 42, V)
    assert path.read_bytes()[: len(MAGIC)] == MAGIC
    assert len(path.read_bytes()) == _HEADER.size + len(payload)


def test_empty_payload_round_trips(store):
    store.save(b"", last_seq=1, journal_id=JID, payload_version=V)
    assert load(store)[1] == b""


def test_no_snapshot_at_all(store):
    assert load(store) is None
    assert store.list() == []


def test_load_latest_prefers_the_newest_valid(store):
    store.save(b"old", last_seq=9, journal_id=JID, payload_version=V)
    store.save(b"new", last_seq=10, journal_id=JID, payload_version=V)
    info, payload = load(store)
    assert (info.last_seq, payload) == (10, b"new")


def test_numeric_not_lexical_order(tmp_path):
    store = SnapshotStore(tmp_path / "s", keep=5)
    store.save(b"nine", last_seq=9, journal_id=JID, payload_version=V)
    store.save(b"hundred", last_seq=100, journal_id=JID, payload_version=V)
    assert load(store)[1] == b"hundred"


@pytest.mark.parametrize("where", ["payload_first", "payload_middle", "payload_last", "digest", "length"])
def test_corrupt_byte_is_detected_and_the_older_snapshot_used(store, where):
    store.save(b"older state", last_seq=5, journal_id=JID, payload_version=V)
    payload = b"x" * 1000
    newest = store.save(payload, last_seq=6, journal_id=JID, payload_version=V)
    offset = {
        "payload_first": _HEADER.size,
        "payload_middle": _HEADER.size + 500,
        "payload_last": _HEADER.size + 999,
        "digest": _HEADER.size - 1,
        "length": _HEADER.size - 32 - 8,
    }[where]
    corrupt(newest, offset)
    info, got = load(store)
    assert (info.last_seq, got) == (5, b"older state")
    with pytest.raises(ValueError):
        store.check(newest, journal_id=JID, head=1_000, payload_version=V)


def test_corrupt_only_snapshot_gives_none(store):
    path = store.save(b"payload", last_seq=5, journal_id=JID, payload_version=V)
    corrupt(path, _HEADER.size + 3)
    assert load(store) is None
    with pytest.raises(ValueError, match="checksum"):
        store.check(path, journal_id=JID, head=1_000, payload_version=V)


@pytest.mark.parametrize("keep_bytes", [0, 10, _HEADER.size - 1, _HEADER.size, _HEADER.size + 50])
def test_truncated_file_is_skipped(store, keep_bytes):
    store.save(b"good", last_seq=1, journal_id=JID, payload_version=V)
    path = store.save(b"p" * 100, last_seq=2, journal_id=JID, payload_version=V)
    path.write_bytes(path.read_bytes()[:keep_bytes])
    info, got = load(store)
    assert (info.last_seq, got) == (1, b"good")
    with pytest.raises(ValueError, match="truncated"):
        store.check(path, journal_id=JID, head=1_000, payload_version=V)


def test_trailing_garbage_is_rejected(store):
    path = store.save(b"p" * 100, last_seq=2, journal_id=JID, payload_version=V)
    path.write_bytes(path.read_bytes() + b"extra")
    assert load(store) is None


def test_wrong_payload_version_is_skipped(store):
    path = store.save(b"v2 payload", last_seq=7, journal_id=JID, payload_version=V - 1)
    assert load(store) is None
    with pytest.raises(ValueError, match="version"):
        store.check(path, journal_id=JID, head=1_000, payload_version=V)
    assert load(store, version=V - 1)[1] == b"v2 payload"


def test_unknown_container_version_is_skipped(store):
    path = store.save(b"payload", last_seq=7, journal_id=JID, payload_version=V)
    data = bytearray(path.read_bytes())
    data[8:10] = (CONTAINER_VERSION + 1).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    assert load(store) is None
    with pytest.raises(ValueError, match="version"):
        store.check(path, journal_id=JID, head=1_000, payload_version=V)


def test_bad_magic_is_skipped(store):
    path = store.save(b"payload", last_seq=7, journal_id=JID, payload_version=V)
    corrupt(path, 0)
    assert load(store) is None
    with pytest.raises(ValueError, match="not a snapshot"):
        store.check(path, journal_id=JID, head=1_000, payload_version=V)


def test_snapshot_of_another_journal_is_skipped(store):
    store.save(b"mine", last_seq=3, journal_id=JID, payload_version=V)
    theirs = store.save(b"theirs", last_seq=4, journal_id=OTHER_JID, payload_version=V)
    info, got = load(store)
    assert (info.last_seq, got) == (3, b"mine")
    with pytest.raises(ValueError, match="different journal"):
        store.check(theirs, journal_id=JID, head=1_000, payload_version=V)
    assert load(store, jid=OTHER_JID)[1] == b"theirs"


def test_snapshot_ahead_of_the_journal_head_is_skipped(store):
    store.save(b"behind", last_seq=10, journal_id=JID, payload_version=V)
    ahead = store.save(b"ahead", last_seq=11, journal_id=JID, payload_version=V)
    info, got = load(store, head=10)
    assert (info.last_seq, got) == (10, b"behind")
    with pytest.raises(ValueError, match="ahead"):
        store.check(ahead, journal_id=JID, head=10, payload_version=V)
    assert store.check(ahead, journal_id=JID, head=11, payload_version=V).last_seq == 11  # at head is fine
    assert load(store, head=9) is None


def test_check_returns_info_for_a_good_file(store):
    path = store.save(b"fine", last_seq=8, journal_id=JID, payload_version=V)
    info = store.check(path, journal_id=JID, head=8, payload_version=V)
    assert (info.path, info.last_seq, info.payload_version) == (path, 8, V)


def test_non_snapshot_files_in_the_directory_are_ignored(store):
    store.save(b"real", last_seq=2, journal_id=JID, payload_version=V)
    (store.directory / "README.txt").write_text("hello")
    (store.directory / "snapshot-99999999999999999999.bak").write_bytes(b"junk")
    assert load(store)[1] == b"real"
    assert [p.name for p in store.list()] == [f"snapshot-{2:020d}.snap"]


def test_prune_keeps_the_newest(tmp_path):
    store = SnapshotStore(tmp_path / "s", keep=3)
    for seq in (5, 1, 9, 3, 7):
        store.save(f"at {seq}".encode(), last_seq=seq, journal_id=JID, payload_version=V)
    assert [p.name for p in store.list()] == [f"snapshot-{s:020d}.snap" for s in (5, 7, 9)]
    store.keep = 1
    store.prune()
    assert [p.name for p in store.list()] == [f"snapshot-{9:020d}.snap"]
    assert load(store)[1] == b"at 9"


def test_default_keep_is_two(tmp_path):
    store = SnapshotStore(tmp_path / "s")
    for seq in range(1, 6):
        store.save(b"x", last_seq=seq, journal_id=JID, payload_version=V)
    assert len(store.list()) == 2


def test_write_leaves_no_temporary_file(store):
    for seq in range(1, 4):
        store.save(os.urandom(100), last_seq=seq, journal_id=JID, payload_version=V)
    assert sorted(p.suffix for p in store.directory.iterdir()) == [".snap", ".snap"]
    assert not list(store.directory.glob("*.tmp"))


def test_a_leftover_temp_file_from_a_crash_is_never_loaded(store):
    store.save(b"committed", last_seq=1, journal_id=JID, payload_version=V)
    # a crash between write and rename leaves the temp file of a newer snapshot behind
    half = store.directory / f"snapshot-{2:020d}.tmp"
    half.write_bytes(b"partial")
    assert load(store)[1] == b"committed"


def test_resaving_the_same_seq_replaces_atomically(store):
    store.save(b"first", last_seq=4, journal_id=JID, payload_version=V)
    store.save(b"second", last_seq=4, journal_id=JID, payload_version=V)
    assert load(store)[1] == b"second"
    assert len(store.list()) == 1


def test_delete_all(store):
    for seq in (1, 2):
        store.save(b"x", last_seq=seq, journal_id=JID, payload_version=V)
    (store.directory / f"snapshot-{3:020d}.tmp").write_bytes(b"partial")
    (store.directory / "unrelated.txt").write_text("keep me")
    assert store.delete_all() == 3
    assert sorted(p.name for p in store.directory.iterdir()) == ["unrelated.txt"]
    assert load(store) is None
    assert store.delete_all() == 0


def test_delete_all_without_a_directory(tmp_path):
    assert SnapshotStore(tmp_path / "never-created").delete_all() == 0


def test_install_copies_a_snapshot_in_under_its_own_seq(store, tmp_path):
    other = SnapshotStore(tmp_path / "elsewhere")
    source = other.save(b"restored state", last_seq=77, journal_id=JID, payload_version=V)
    target = store.install(source)
    assert target == store.directory / f"snapshot-{77:020d}.snap"
    assert target.read_bytes() == source.read_bytes()
    assert source.exists()  # copied, not moved
    assert not list(store.directory.glob("*.tmp"))
    info, payload = load(store)
    assert (info.last_seq, payload) == (77, b"restored state")


def test_install_rejects_a_tiny_file_and_a_bad_install_is_still_checked_on_load(store, tmp_path):
    tiny = tmp_path / "tiny.snap"
    tiny.write_bytes(b"too short")
    with pytest.raises(ValueError):
        store.install(tiny)
    good = SnapshotStore(tmp_path / "src").save(b"payload", last_seq=5, journal_id=JID, payload_version=V)
    bad = tmp_path / "bad.snap"
    data = bytearray(good.read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    installed = store.install(bad)
    assert installed.exists()
    assert load(store) is None  # installed, but never trusted
