"""The append-only ledger and atomic state commits."""

import pytest

from pgu.core.checkpoint import CheckpointError
from pgu.core.ledger import COLUMNS, LedgerError, append_row, read_ledger
from pgu.core.state import StateStore


def _row(i: int) -> dict:
    return {c: f"{c}-{i}" for c in COLUMNS} | {"n_samples": i, "gamma": 0.95, "replay": False}


def test_ledger_appends_keep_earlier_bytes(tmp_path):
    path = tmp_path / "ledger.csv"
    assert read_ledger(path).empty
    append_row(path, _row(1))
    first = path.read_bytes()
    table = append_row(path, _row(2))
    assert path.read_bytes().startswith(first)
    assert table["request_id"].tolist() == ["request_id-1", "request_id-2"]
    assert list(table.columns) == COLUMNS


def test_ledger_rejects_unknown_fields_and_foreign_files(tmp_path):
    path = tmp_path / "ledger.csv"
    with pytest.raises(LedgerError, match="unknown ledger fields"):
        append_row(path, {"request_id": "r", "secret_ids": "1,2"})
    path.write_text("a,b\n1,2\n")
    with pytest.raises(LedgerError, match="lacks ledger columns"):
        append_row(path, _row(1))
    assert path.read_text() == "a,b\n1,2\n"


def test_commit_replaces_a_state_atomically(tmp_path):
    store = StateStore(tmp_path)
    store.commit("s", {"model.safetensors": b"v1", "retain_stats.safetensors": b"r1"})
    assert store.has("s")
    store.commit("s", {"model.safetensors": b"v2", "retain_stats.safetensors": b"r2"})
    assert (tmp_path / "s" / "model.safetensors").read_bytes() == b"v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary folders left


def test_failed_commit_leaves_the_previous_state(tmp_path):
    store = StateStore(tmp_path)
    store.commit("s", {"model.safetensors": b"v1", "retain_stats.safetensors": b"r1"})
    with pytest.raises(TypeError):
        store.commit("s", {"model.safetensors": b"v2", "retain_stats.safetensors": object()})
    assert (tmp_path / "s" / "model.safetensors").read_bytes() == b"v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_ledger_refuses_a_half_written_last_row(tmp_path):
    # pandas pads a short row with NaN: the next append would follow a row with no hashes
    path = tmp_path / "ledger.csv"
    append_row(path, _row(1))
    append_row(path, _row(2))
    path.write_bytes(path.read_bytes()[:-30])
    before = path.read_bytes()
    with pytest.raises(LedgerError, match="last row is incomplete"):
        read_ledger(path)
    with pytest.raises(LedgerError, match="last row is incomplete"):
        append_row(path, _row(3))
    assert path.read_bytes() == before
    path.write_bytes(before[: before.rindex(b",")] + b"\n")  # a line end, one field short
    with pytest.raises(LedgerError, match=r"line 3 has 20 fields, the header 23"):
        read_ledger(path)


def test_a_missing_request_state_file_says_how_to_restore_it(tmp_path):
    store = StateStore(tmp_path)
    store.commit("req-0001", {"model.safetensors": b"v1"})
    with pytest.raises(CheckpointError, match="restore the file .*`dvc checkout"):
        store.load_stats("req-0001")


def test_clean_leftovers_clears_interrupted_commits_only(tmp_path):
    store = StateStore(tmp_path)
    store.commit("s", {"model.safetensors": b"v2"})
    (tmp_path / ".s.new.ab_c1234").mkdir()  # killed before the rename
    (tmp_path / ".s.new.ab_c1234" / "model.safetensors").write_bytes(b"v3")
    (tmp_path / ".s.old.zz9zz9zz" / "s").mkdir(parents=True)  # killed after the swap
    (tmp_path / ".t.old.k0k0k0k0" / "t").mkdir(parents=True)  # killed between the renames
    (tmp_path / ".t.old.k0k0k0k0" / "t" / "model.safetensors").write_bytes(b"t1")
    for name in (".s.new.short", ".notes", "other"):  # not the store's temporary names
        (tmp_path / name).mkdir()
    lines = store.clean_leftovers()
    assert len([line for line in lines if line.startswith("removed")]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".notes",
        ".s.new.short",
        "other",
        "s",
        "t",
    ]
    assert (tmp_path / "t" / "model.safetensors").read_bytes() == b"t1"
    assert (tmp_path / "s" / "model.safetensors").read_bytes() == b"v2"
    assert store.clean_leftovers() == []


def test_the_data_check_reads_r_fulls_header_and_refuses_other_data(tmp_path, caplog):
    """check_data_unchanged: no statistics yet passes (loading them says what to run), a
    fingerprint that differs is refused, statistics without one pass with a warning, and a
    damaged header is a CheckpointError."""
    import logging

    import torch

    from pgu.core.checkpoint import tensors_to_bytes
    from pgu.core.deletion import check_data_unchanged

    store = StateStore(tmp_path / "states")
    assert check_data_unchanged(store, "abc") == {}
    r = {"fc": torch.eye(2, dtype=torch.float64)}
    store.commit(
        "original", {"retain_stats.safetensors": tensors_to_bytes(r, {"data_sha256": "abc"})}
    )
    assert store.stats_meta("original") == {"data_sha256": "abc"}
    assert check_data_unchanged(store, "abc")["data_sha256"] == "abc"
    with pytest.raises(CheckpointError, match="not the data the original model's statistics"):
        check_data_unchanged(store, "abd")
    store.commit("original", {"retain_stats.safetensors": tensors_to_bytes(r, {"n_samples": 2})})
    with caplog.at_level(logging.WARNING):
        assert check_data_unchanged(store, "abd") == {}
    assert "predate data fingerprints" in caplog.text
    (store.path("original") / "retain_stats.safetensors").write_bytes(b"\xff" * 40)
    with pytest.raises(CheckpointError, match="unreadable header"):
        store.stats_meta("original")


def test_a_purged_state_is_one_with_a_tombstone_not_a_missing_file(tmp_path):
    store = StateStore(tmp_path / "states")
    assert not store.purged("req-0001")  # never written: missing, not purged
    store.commit("req-0001", {"model.safetensors": b"m", "bases.safetensors": b"b"})
    assert not store.purged("req-0001")
    (store.path("req-0001") / "model.safetensors").unlink()
    (store.path("req-0001") / "bases.safetensors").unlink()
    assert not store.purged("req-0001")  # emptied, as `dvc repro` does before a stage: not purged
    (store.path("req-0001") / "model.safetensors.purged").write_text("purged\n")
    assert store.purged("req-0001")  # what `pgu-admin purge` leaves
    assert not store.purged("req-0001", "retain_stats.safetensors")


def _plan(rid: str, after: str):
    import numpy as np

    from pgu.core.deletion import RequestPlan
    from pgu.core.requests import DeletionRequest

    return RequestPlan(DeletionRequest(rid, (1,), (), "", ""), np.array([1]), after)


def test_a_purged_state_is_not_rebuilt_by_a_replay(tmp_path):
    """`dvc repro` replays a processed request whose files are missing: after `pgu-admin purge`
    that would rebuild states that held removed samples, so the replay is refused (its own state
    or its starting state purged); pending requests and unpurged replays go ahead."""
    from pgu.core.deletion import check_not_purged
    from pgu.core.requests import RequestError

    store = StateStore(tmp_path / "states")
    for name in ("req-0001", "req-0002", "req-0003"):
        store.commit(name, {"model.safetensors": b"m", "retain_stats.safetensors": b"r"})
    plans = [_plan("req-0001", "original"), _plan("req-0002", "req-0001")]
    plans += [_plan("req-0003", "req-0002"), _plan("req-0004", "req-0003")]
    done = {rid: {} for rid in ("req-0001", "req-0002", "req-0003")}
    check_not_purged(store, plans, done)  # nothing purged: replays go ahead
    for name in ("req-0001", "req-0002"):  # `dvc repro` deletes a stage's files first: no refusal
        store.remove(name, keep=())
    check_not_purged(store, plans, done)
    for name in ("req-0001", "req-0002"):  # what the purge leaves: req-0003 served
        (store.path(name) / "model.safetensors.purged").write_text("purged\n")
    for refused, gone in ((plans[0], "req-0001"), (plans[1], "req-0002"), (plans[2], "req-0002")):
        with pytest.raises(RequestError, match=f"deleted state {gone}") as err:
            check_not_purged(store, [refused], done)
        assert "dvc repro -s unlearn@<id>" in str(err.value)
        assert f"delete the purge's tombstones {store.path(gone)}/*.purged" in str(err.value)
    check_not_purged(store, plans[3:], done)  # the pending request starts from the served state
    (store.path("req-0001") / "model.safetensors.purged").unlink()  # its own state not purged
    store.path("original").mkdir()
    (store.path("original") / "retain_stats.safetensors.purged").write_text("purged\n")
    with pytest.raises(RequestError, match="has deleted R_full .*retain_stats.safetensors.purged"):
        check_not_purged(store, [plans[0]], {"req-0001": {}})  # a replay from the original


def test_r_full_a_purge_deleted_is_not_collected_again(tmp_path):
    from pgu.core.requests import RequestError
    from pgu.core.state import check_statistics_not_purged

    store = StateStore(tmp_path / "states")
    check_statistics_not_purged(store)  # a first run: no states at all
    store.commit("original", {"model.safetensors": b"m"})
    check_statistics_not_purged(store)  # R_full missing, as `dvc repro` leaves it before a rerun
    r_full = store.path("original") / "retain_stats.safetensors"
    (store.path("original") / "retain_stats.safetensors.purged").write_text("purged\n")
    with pytest.raises(RequestError, match="deleted by `pgu-admin purge`") as err:
        check_statistics_not_purged(store)
    assert "pgu-admin archive" in str(err.value) and f"delete {r_full}.purged" in str(err.value)
    assert "dvc repro -s unlearn@<id>" in str(err.value)


def test_a_committed_state_folder_is_readable_as_any_other_folder(tmp_path):
    import os

    store = StateStore(tmp_path / "states")
    store.commit("req-0001", {"model.safetensors": b"m"})
    mask = os.umask(0o022)
    os.umask(mask)
    assert (store.path("req-0001").stat().st_mode & 0o777) == 0o777 & ~mask  # not mkdtemp's 0700
