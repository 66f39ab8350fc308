"""The audit trail is checked before it is built on: request files, state files, the ledger."""

import json
import logging
import shutil

import pandas as pd
import pytest
import yaml
from conftest import KedroProject

from pgu.core.checkpoint import sha256_file
from pgu.core.data import split_ids
from pgu.core.ledger import read_ledger
from pgu.core.requests import file_request
from pgu.core.state import StateStore

pytestmark = pytest.mark.slow
REQUESTS = "data/01_raw/deletion_requests"
STATES = "data/06_models/states"
LEDGER = "data/08_reporting/ledger.csv"


@pytest.fixture(scope="module")
def processed(trained_project, tmp_path_factory) -> KedroProject:
    """Two small requests processed: states original, req-0001, req-0002 and two ledger rows."""
    project = trained_project.clone(tmp_path_factory.mktemp("chain") / "p")
    index = pd.read_csv(project.path / "data/02_intermediate/sample_index.csv")
    train = split_ids(index, "train")
    file_request(project.path / REQUESTS, sample_ids=train[:20].tolist())
    file_request(project.path / REQUESTS, sample_ids=train[20:40].tolist())
    project.run("unlearn")
    return project


@pytest.fixture
def project(processed, tmp_path) -> KedroProject:
    return processed.clone(tmp_path / "p")


def _refused(project: KedroProject, message: str, **params) -> None:
    """The run fails with ``message`` and leaves every file as it was."""
    before = project.files()
    with pytest.raises(Exception, match=message):
        project.run("unlearn", params=params or None)
    assert project.files() == before


def test_an_edited_processed_request_is_refused(project):
    # an id taken out of a processed request would otherwise be subtracted a second time
    path = project.path / REQUESTS / "req-0001.yml"
    doc = yaml.safe_load(path.read_text())
    removed = doc["forget"]["sample_ids"].pop()
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    file_request(project.path / REQUESTS, sample_ids=[removed])
    _refused(project, r"request req-0001 was processed, but .* has changed .* cannot be edited")


def _copy_original(name: str):
    def tamper(p):
        shutil.copy(p / STATES / "original" / name, p / STATES / "req-0002" / name)

    return tamper


def _garble_original(p):
    path = p / STATES / "original" / "model.safetensors"
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0x5A for b in data[mid : mid + 64])
    path.write_bytes(bytes(data))


def _edit_ledger_hash(p):
    ledger = p / LEDGER
    row = read_ledger(ledger).iloc[-1]
    digest = row["output_model_sha256"]
    ledger.write_text(ledger.read_text().replace(digest, "0" * 64))


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_copy_original("model.safetensors"), "req-0002/model.safetensors is not the file"),
        (
            _copy_original("retain_stats.safetensors"),
            "req-0002/retain_stats.safetensors is not the file request req-0002 wrote",
        ),
        (
            lambda p: (p / STATES / "req-0002/retain_stats.safetensors").unlink(),
            r"retain_stats.safetensors is missing, but request req-0002 was processed; "
            r"restore it \(`dvc checkout",
        ),
        (_edit_ledger_hash, "req-0002/model.safetensors is not the file"),
        (
            lambda p: (p / LEDGER).write_bytes((p / LEDGER).read_bytes()[:-300]),
            "last row is incomplete",
        ),
        (
            lambda p: (p / LEDGER).unlink(),
            r"states of requests \['req-0002'\] exist but the ledger does not list them",
        ),
        (
            _garble_original,
            r"damaged or retrained since the processed requests began: restore the original "
            r".*`pgu-admin archive` this one first",
        ),
    ],
    ids=[
        "model",
        "stats",
        "missing-stats",
        "ledger-hash",
        "ledger-truncated",
        "ledger-deleted",
        "original-damaged",
    ],
)
def test_a_state_or_ledger_that_does_not_match_is_refused(project, tamper, message):
    # filed first: filing reads the ledger too, and refuses a truncated one itself
    file_request(project.path / REQUESTS, sample_ids=[int(split_ids(_index(project), "train")[50])])
    tamper(project.path)
    _refused(project, message)


def _index(project: KedroProject) -> pd.DataFrame:
    return pd.read_csv(project.path / "data/02_intermediate/sample_index.csv")


def test_a_replay_leaves_later_requests_stale_until_they_are_replayed_in_order(project, caplog):
    p = project.path
    ledger_path = p / LEDGER
    caplog.set_level(logging.WARNING, logger="pgu")
    project.run("unlearn", params={"unlearn": {"request_id": "req-0001"}, "cgs": {"gamma": 0.9}})
    ledger = read_ledger(ledger_path)
    assert ledger["request_id"].tolist() == ["req-0001", "req-0002", "req-0001"]
    assert ledger.loc[2, "output_model_sha256"] != ledger.loc[0, "output_model_sha256"]
    assert "req-0002 and every processed request after it are stale" in caplog.text
    # req-0002 was built from the replaced req-0001: nothing may start from it
    file_request(p / REQUESTS, sample_ids=[int(split_ids(_index(project), "train")[50])])
    _refused(project, "request req-0002 was processed from an earlier version of state 'req-0001'")
    with pytest.raises(Exception, match="so state 'req-0002' is stale"):
        project.run("cgs")  # the preview starts where the request would
    # replaying the later request next, as `dvc repro` does, is allowed and mends the chain
    project.run("unlearn", params={"unlearn": {"request_id": "req-0002"}, "cgs": {"gamma": 0.9}})
    ledger = read_ledger(ledger_path)
    assert ledger.loc[3, "input_model_sha256"] == ledger.loc[2, "output_model_sha256"]
    from pgu.core.deletion import check_start_state  # here: the module imports without it

    check_start_state(StateStore(p / STATES), ledger, "req-0002")
    project.run("unlearn")
    assert read_ledger(ledger_path)["request_id"].tolist()[-1] == "req-0003"


def test_leftovers_of_a_killed_run_are_removed_when_the_pipeline_starts(project):
    p = project.path
    kept = project.files()
    leftovers = [
        p / STATES / ".req-0003.new.a1b2c3d4/model.safetensors",
        p / "data/08_reporting/requests/req-0002/.metrics.json.q_w3e4r5.tmp",
        p / "data/08_reporting/.ledger.csv.zzzzzzzz.tmp",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    project.run("unlearn")  # nothing pending
    assert not any(path.exists() for path in leftovers)
    assert not (p / STATES / ".req-0003.new.a1b2c3d4").exists()
    after = project.files()
    assert {k: v for k, v in after.items() if "unlearn_last_run" not in k} == {
        k: v for k, v in kept.items() if "unlearn_last_run" not in k
    }
    assert (
        sha256_file(p / STATES / "req-0002/model.safetensors")
        == (read_ledger(p / LEDGER).iloc[-1]["output_model_sha256"])
    )


def test_a_sample_request_after_a_class_removal_is_judged_without_that_class(
    trained_project, tmp_path
):
    # the removed class's val samples are now always wrong: counted in the val accuracy the
    # guard reads, they put every later request "below the guard" before its first epoch
    project = trained_project.clone(tmp_path / "p")
    index = _index(project)
    train = index[(index["split"] == "train") & (index["label"] != 3)]["sample_id"].to_numpy()
    file_request(project.path / REQUESTS, classes=[3])
    file_request(project.path / REQUESTS, sample_ids=train[:30].tolist())
    project.run("unlearn")
    rows = read_ledger(project.path / LEDGER)
    assert rows["request_id"].tolist() == ["req-0001", "req-0002"]
    assert rows.loc[1, "stop_reason"] == "target_reached"
    assert rows.loc[1, "output_model_sha256"] != rows.loc[1, "input_model_sha256"]


def test_the_audit_checks_the_request_files_and_states_it_reads(project):
    path = project.path / REQUESTS / "req-0001.yml"
    text = path.read_text()
    path.write_text(text + "# edited after processing\n")
    before = project.files()
    with pytest.raises(Exception, match="request req-0001 was processed, but .* has changed"):
        project.run("evaluate")
    path.write_text(text)
    _copy_original("model.safetensors")(project.path)
    with pytest.raises(Exception, match="req-0002/model.safetensors is not the file"):
        project.run("evaluate")
    assert project.files().keys() == before.keys()  # no gold standard trained, no report


def test_a_state_the_ledger_lost_the_row_of_is_recomputed_with_a_warning(project, caplog):
    # a run killed between commit and ledger row looks the same: the rerun completes it
    ledger = project.path / LEDGER
    lines = ledger.read_text().splitlines(keepends=True)
    ledger.write_text("".join(lines[:-1]))
    caplog.set_level(logging.WARNING, logger="pgu")
    project.run("unlearn")
    assert "state req-0002 exists but the ledger has no row for it" in caplog.text
    assert read_ledger(ledger)["request_id"].tolist() == ["req-0001", "req-0002"]


def test_verify_checks_the_trail_from_hashes_and_names_what_broke(project, capsys):
    from pgu.admin import main

    requests = str(project.path / REQUESTS)
    assert main(["verify", "--requests", requests]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 10 and all(line.startswith("ok") for line in out)
    assert "data: the sample bundle and index are what R_full was collected over" in out[1]
    assert "forgotten ids: each processed request resolves" in out[3]
    assert "original model: the one the train stage wrote" in out[-2]
    assert "R_full: the statistics req-0001 started from" in out[-1]

    # the bases, R_full and the train stage's record are checked too
    states, metrics = project.path / STATES, project.path / "data/08_reporting/train/metrics.json"
    swaps = [
        (states / "req-0002/bases.safetensors", states / "req-0001/bases.safetensors", "bases"),
        (
            states / "original/retain_stats.safetensors",
            states / "req-0001/retain_stats.safetensors",
            "as req-0001's input statistics",
        ),
    ]
    for target, other, message in swaps:
        kept = target.read_bytes()
        shutil.copy(other, target)
        assert main(["verify", "--requests", requests]) == 1
        (failed,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("FAIL")]
        assert str(target) in failed and message in failed
        target.write_bytes(kept)
    kept = metrics.read_text()
    metrics.write_text(kept.replace(json.loads(kept)["model_sha256"], "0" * 64))
    assert main(["verify", "--requests", requests]) == 1
    assert "is not the model the train stage wrote" in capsys.readouterr().out
    metrics.write_text(kept)

    shutil.copy(
        project.path / STATES / "original/model.safetensors", project.path / STATES / "req-0001"
    )
    index_path = project.path / "data/02_intermediate/sample_index.csv"
    index = pd.read_csv(index_path)
    forgotten = yaml.safe_load((project.path / REQUESTS / "req-0002.yml").read_text())
    index.loc[index["sample_id"] == forgotten["forget"]["sample_ids"][0], "split"] = "val"
    index.to_csv(index_path, index=False)
    assert main(["verify", "--requests", requests]) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 3
    assert "not the data the original model's statistics were collected over" in failed[0]
    assert "are in the val/test splits" in failed[1]  # the ids no longer resolve
    assert (
        "req-0001/model.safetensors is not the file the ledger records as request req-0001"
        in failed[2]
    )

    (project.path / STATES / "req-0001" / "model.safetensors").unlink()  # lost: no tombstone
    assert main(["verify", "--requests", requests]) == 1
    assert "state req-0001: its model is missing and `pgu-admin purge` left no tombstone" in (
        capsys.readouterr().out
    )
    for name in ("retain_stats.safetensors", "bases.safetensors"):
        (project.path / STATES / "req-0001" / name).unlink(missing_ok=True)  # an older purge's
    main(["verify", "--requests", requests])
    assert "skip  state req-0001: not checked: its folder is empty without the purge's" in (
        capsys.readouterr().out
    )
    (project.path / STATES / "req-0001" / "model.safetensors.purged").write_text("purged\n")
    main(["verify", "--requests", requests])  # today's purge leaves tombstones
    assert "ok    state req-0001: purged" in capsys.readouterr().out
