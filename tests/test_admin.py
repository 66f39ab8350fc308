"""pgu-admin: filing requests from the command line and purging superseded states."""

import hashlib
from pathlib import Path

import pandas as pd
import pytest
import torch

from pgu.admin import main
from pgu.core.checkpoint import sha256_file
from pgu.core.ledger import COLUMNS, append_row
from pgu.core.requests import load_requests, read_queue
from pgu.core.state import StateStore

STATE_FILES = ("model.safetensors", "retain_stats.safetensors")


def _process(states, ledger, rids):
    """Ledger rows for ``rids`` in order that chain the states' files, as the unlearn stage
    writes them (missing state files are made up first)."""
    previous, handed = "", ("", "")
    for name in ("original", *rids):
        (states / name).mkdir(parents=True, exist_ok=True)
        for f in STATE_FILES:
            if not (states / name / f).exists():
                (states / name / f).write_bytes(f"{name}/{f}".encode())
        out = [sha256_file(states / name / f) for f in STATE_FILES]
        if name != "original":
            row = {c: "x" for c in COLUMNS} | {"request_id": name, "input_state": previous}
            row |= dict(zip(("input_model_sha256", "input_stats_sha256"), handed, strict=True))
            row |= dict(zip(("output_model_sha256", "output_stats_sha256"), out, strict=True))
            append_row(ledger, row)
        previous, handed = name, out


def _index(tmp_path, n=20, name="index.csv"):
    """A sample index of ``n`` samples, two classes; the last 4 are val and test."""
    index = pd.DataFrame(
        {
            "sample_id": range(n),
            "key": [f"k{i}" for i in range(n)],
            "label": [i % 2 for i in range(n)],
            "split": ["train"] * (n - 4) + ["val"] * 2 + ["test"] * 2,
        }
    )
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    index.to_csv(path, index=False)
    return path


def test_file_request_from_ids_classes_and_random_fraction(tmp_path, capsys):
    folder, index = tmp_path / "requests", _index(tmp_path)
    common = ["--requests", str(folder), "--index", str(index)]
    assert main(["file-request", "--ids", "1, 3", "--note", "ticket 1", *common]) == 0
    assert main(["file-request", "--random-fraction", "0.25", "--seed", "1", *common]) == 0
    assert main(["file-request", "--classes", "1", *common]) == 0
    requests = load_requests(folder)
    assert [r.id for r in requests] == ["req-0001", "req-0002", "req-0003"]
    assert requests[0].sample_ids == (1, 3) and requests[0].note == "ticket 1"
    drawn = set(requests[1].sample_ids)
    assert len(drawn) == 4 and not drawn & {1, 3} and drawn <= set(range(16))
    assert requests[2].classes == (1,)
    assert "filed" in capsys.readouterr().out
    assert main(["file-request", "--random-fraction", "1.0", *common]) == 2  # 4 already drawn
    assert "cannot draw" in capsys.readouterr().err
    free = min(set(range(0, 16, 2)) - drawn)  # class 0, train, not yet forgotten
    assert main(["file-request", "--ids", str(free), "--purpose", "depoison", *common]) == 0
    assert load_requests(folder)[-1].kind == "depoison"
    assert main(["file-request", "--classes", "0", "--purpose", "depoison", *common]) == 2
    assert "give them with --ids or --ids-file, not --classes" in capsys.readouterr().err
    assert main(["file-request", "--note", "no ids", *common]) == 2  # in the options' words
    assert "nothing to forget: give --ids, --ids-file" in capsys.readouterr().err
    assert len(load_requests(folder)) == 4  # the refused request left nothing behind
    # ids are checked against the index and the queue before anything is written
    files = sorted(p.name for p in folder.iterdir())
    for bad, message in (
        ("1", "already named by an earlier request"),
        ("999", "unknown sample id"),
    ):
        assert main(["file-request", "--ids", bad, *common]) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == files
    # a queue other than conf/base's: the hint names the --env it needs
    other = min(set(range(0, 16, 2)) - drawn - {free})
    assert main(["file-request", "--ids", str(other), *common]) == 0
    assert "kedro run --env <env> --pipelines unlearn" in capsys.readouterr().out


def test_purge_deletes_superseded_states_and_their_cache_objects(tmp_path):
    states, ledger, cache = tmp_path / "states", tmp_path / "ledger.csv", tmp_path / "cache"
    files = {}
    for state in ("original", "req-0001", "req-0002"):
        (states / state).mkdir(parents=True)
        for name in ("model.safetensors", "retain_stats.safetensors"):
            data = f"{state}/{name}".encode()
            (states / state / name).write_bytes(data)
            md5 = hashlib.md5(data).hexdigest()
            obj = cache / "files" / "md5" / md5[:2] / md5[2:]
            obj.parent.mkdir(parents=True, exist_ok=True)
            obj.write_bytes(data)
            files[(state, name)] = obj
    _process(states, ledger, ["req-0001", "req-0002"])
    args = ["purge", "--states", str(states), "--ledger", str(ledger), "--dvc-cache", str(cache)]
    assert main([*args, "--dry-run"]) == 0
    assert all(obj.exists() for obj in files.values())
    assert main(args) == 0
    left = sorted(str(p.relative_to(states)) for p in states.rglob("*.safetensors"))
    assert left == [
        "original/model.safetensors",
        "req-0002/model.safetensors",
        "req-0002/retain_stats.safetensors",
    ]
    assert not files[("req-0001", "model.safetensors")].exists()
    assert not files[("original", "retain_stats.safetensors")].exists()
    assert files[("req-0002", "model.safetensors")].exists()
    assert ledger.read_text().count("\nreq-0001,") == 1  # the ledger keeps its rows
    # each deleted state file leaves a tombstone (when, and its md5), which a second purge
    # leaves alone and which marks the state purged rather than lost
    tombs = sorted(str(p.relative_to(states)) for p in states.rglob("*.purged"))
    assert tombs == [
        "original/retain_stats.safetensors.purged",
        "req-0001/bases.safetensors.purged",  # (never written here: marked as gone)
        "req-0001/model.safetensors.purged",
        "req-0001/retain_stats.safetensors.purged",
    ]
    md5 = hashlib.md5(b"req-0001/model.safetensors").hexdigest()
    assert md5 in (states / "req-0001/model.safetensors.purged").read_text()
    assert StateStore(states).purged("req-0001") and not StateStore(states).purged("req-0002")
    assert main(args) == 0
    assert sorted(str(p.relative_to(states)) for p in states.rglob("*.purged")) == tombs
    # a workspace an older purge emptied (no tombstones) is marked by the next purge
    for tomb in states.rglob("*.purged"):
        tomb.unlink()
    assert not StateStore(states).purged("req-0001") and StateStore(states).emptied("req-0001")
    assert main(args) == 0
    assert sorted(str(p.relative_to(states)) for p in states.rglob("*.purged")) == tombs
    assert "already gone" in (states / "req-0001/model.safetensors.purged").read_text()


def test_purge_deletes_evaluation_models_that_saw_forgotten_samples(tmp_path):
    """req-0001's gold standard saw req-0002's samples; a shadow "with" model saw its own."""
    states, ledger, cache = tmp_path / "states", tmp_path / "ledger.csv", tmp_path / "cache"
    retrained = tmp_path / "retrained"
    objects = {}
    _process(states, ledger, ["req-0001", "req-0002"])
    for rid in ("req-0001", "req-0002"):
        for name in (
            "model.safetensors",
            "gold.json",
            *(f"shadow/{s}-{tag}/model.safetensors" for s in (0, 1) for tag in ("with", "without")),
        ):
            path = retrained / rid / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"{rid}/{name}".encode())
            md5 = hashlib.md5(path.read_bytes()).hexdigest()
            obj = cache / "files" / "md5" / md5[:2] / md5[2:]
            obj.parent.mkdir(parents=True, exist_ok=True)
            obj.write_bytes(path.read_bytes())
            objects[str(path.relative_to(retrained))] = obj
    args = ["purge", "--states", str(states), "--ledger", str(ledger), "--dvc-cache", str(cache)]
    assert main(args) == 0
    files = sorted(str(p.relative_to(retrained)) for p in retrained.rglob("*") if p.is_file())
    left = [f for f in files if not f.endswith(".purged")]
    assert left == [
        "req-0002/gold.json",
        "req-0002/model.safetensors",
        "req-0002/shadow/0-without/model.safetensors",
        "req-0002/shadow/1-without/model.safetensors",
    ]
    assert sorted(k for k, obj in objects.items() if obj.exists()) == left
    # every deleted model leaves its tombstone: evaluate will not train it again
    assert sorted(f for f in files if f.endswith(".purged")) == sorted(
        f"{k}.purged" for k, obj in objects.items() if not obj.exists()
    )


def test_purge_keeps_a_cache_object_that_a_kept_file_shares(tmp_path):
    """A request that changed nothing leaves equal bytes, which DVC stores once."""
    states, ledger, cache = tmp_path / "states", tmp_path / "ledger.csv", tmp_path / "cache"
    for rid in ("req-0001", "req-0002"):
        (states / rid).mkdir(parents=True)
        (states / rid / "model.safetensors").write_bytes(b"same bytes")
    _process(states, ledger, ["req-0001", "req-0002"])
    md5 = hashlib.md5(b"same bytes").hexdigest()
    obj = cache / "files" / "md5" / md5[:2] / md5[2:]
    obj.parent.mkdir(parents=True)
    obj.write_bytes(b"same bytes")
    args = ["purge", "--states", str(states), "--ledger", str(ledger), "--dvc-cache", str(cache)]
    assert main(args) == 0
    assert not (states / "req-0001/model.safetensors").exists()
    assert (states / "req-0002/model.safetensors").exists() and obj.exists()


def test_repeated_options_add_up_and_duplicates_across_them_are_caught(tmp_path, capsys):
    folder, index = tmp_path / "requests", _index(tmp_path)
    common = ["--requests", str(folder), "--index", str(index)]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("4\n6\n")
    args = ["--ids", "0", "--ids", "2", "--ids-file", str(ids_file), "--classes", "1"]
    assert main(["file-request", *args, *common]) == 0
    assert main(["file-request", "--ids", "8", "--ids", "8", *common]) == 2
    assert "duplicate sample ids [8]" in capsys.readouterr().err
    assert main(["file-request", "--classes", "0", "--classes", "0", *common]) == 2
    assert "listed twice" in capsys.readouterr().err
    (request,) = load_requests(folder)
    assert (request.sample_ids, request.classes) == ((0, 2, 4, 6), (1,))


def test_bad_input_is_one_clear_line_and_writes_nothing(tmp_path, capsys):
    folder, index = tmp_path / "requests", _index(tmp_path)
    common = ["--requests", str(folder), "--index", str(index)]
    assert main(["file-request", "--ids", "1", *common]) == 0
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("2\n3x\n")
    binary = tmp_path / "ids.bin"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    no_label = tmp_path / "no_label.csv"
    pd.read_csv(index).drop(columns="label").to_csv(no_label, index=False)
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "header_only.csv").write_text("sample_id,key,label,split\n")
    rebuild = "rebuild it with `kedro run --env <env> --pipelines data`, or restore it with `dvc"
    cases = [
        (["--ids", "abc"], "--ids: 'abc' is not an integer"),
        (["--ids", "1.5"], "--ids: '1.5' is not an integer"),
        (["--classes", "a"], "--classes: 'a' is neither an integer label nor a class name"),
        (["--ids-file", str(ids_file)], f"--ids-file {ids_file}: '3x' is not an integer"),
        (["--ids-file", str(tmp_path / "no.txt")], "no.txt not found"),
        (["--ids", "99999999999999999999"], "[99999999999999999999] out of range"),
        (["--ids", "2", "--id", "original"], "'original' is reserved"),
        (["--ids", "2", "--index", str(tmp_path / "typo.csv")], "typo.csv not found; run"),
        (["--ids", "2", "--requests", str(tmp_path / "no/deletion_requests")], "does not exist"),
        (["--ids-file", str(binary)], f"--ids-file {binary} is not a text file; it should hold"),
        (["--random-fraction", "nan"], "--random-fraction must be a share in (0, 1], got nan"),
        (["--random-fraction", "inf"], "must be a share in (0, 1], got inf"),
        (["--random-fraction", "1.5"], "must be a share in (0, 1], got 1.5"),
        (["--ids", "2", "--index", str(no_label)], f"{no_label} lacks the column(s) ['label']; "),
        (["--ids", "2", "--index", str(no_label)], rebuild),
        (["--ids", "2", "--index", str(tmp_path / "empty.csv")], "empty.csv is not a CSV table"),
        (["--ids", "2", "--index", str(tmp_path / "header_only.csv")], "has no rows; rebuild"),
    ]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for args, message in cases:
        assert main(["file-request", *common, *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_an_id_the_ledger_lists_is_never_reused(tmp_path, capsys):
    folder = tmp_path / "data/01_raw/deletion_requests"
    folder.parent.mkdir(parents=True)
    common = ["--requests", str(folder), "--index", str(_index(tmp_path))]
    ledger = tmp_path / "data/08_reporting/ledger.csv"
    append_row(ledger, {c: "x" for c in COLUMNS} | {"request_id": "req-0001"})
    assert main(["file-request", "--ids", "1", "--id", "req-0001", *common]) == 2
    assert "in the ledger" in capsys.readouterr().err
    assert main(["file-request", "--ids", "1", *common]) == 0
    assert [r.id for r in load_requests(folder)] == ["req-0002"]


def test_purge_refuses_when_the_served_state_is_not_what_the_ledger_records(tmp_path, capsys):
    """After a replay of req-0001 with another result, req-0002 is stale: purging would keep it
    as served and delete the replayed req-0001, the only state the chain can go on from."""
    states, ledger, cache = tmp_path / "states", tmp_path / "ledger.csv", tmp_path / "cache"
    _process(states, ledger, ["req-0001", "req-0002"])
    (states / "req-0001" / "model.safetensors").write_bytes(b"replayed")
    _process(states, ledger, ["req-0001"])  # the replay's row
    before = sorted(p for p in states.rglob("*") if p.is_file())
    args = ["purge", "--states", str(states), "--ledger", str(ledger), "--dvc-cache", str(cache)]
    assert main(args) == 2
    assert "replayed since with another result" in capsys.readouterr().err
    assert sorted(p for p in states.rglob("*") if p.is_file()) == before


def test_purge_refuses_states_without_a_ledger_and_a_missing_states_folder(tmp_path, capsys):
    states, ledger, cache = tmp_path / "states", tmp_path / "ledger.csv", tmp_path / "cache"
    args = ["purge", "--states", str(states), "--ledger", str(ledger), "--dvc-cache", str(cache)]
    assert main(args) == 2
    assert "no states folder" in capsys.readouterr().err
    _process(states, ledger, ["req-0001"])
    ledger.unlink()
    assert main(args) == 2
    assert "states ['req-0001'] exist but the ledger" in capsys.readouterr().err
    ledger.write_bytes(b"")
    assert main(args) == 2
    assert "is empty (not even its header)" in capsys.readouterr().err


def test_a_queue_is_checked_against_the_index_of_its_own_environment(tmp_path, monkeypatch, capsys):
    """conf/cifar10 keeps its index and queue in cifar10/ subfolders of the data layers."""
    monkeypatch.chdir(tmp_path)
    _index(tmp_path, name="data/02_intermediate/sample_index.csv")  # conf/base: 20 samples
    cifar_index = _index(tmp_path, n=6000, name="data/02_intermediate/cifar10/sample_index.csv")
    base = Path("data/01_raw/deletion_requests")
    cifar = Path("data/01_raw/cifar10/deletion_requests")
    base.mkdir(parents=True)
    cifar.mkdir(parents=True)
    assert main(["file-request", "--ids", "5000"]) == 2
    assert "1 unknown sample id [5000]" in capsys.readouterr().err
    assert main(["file-request", "--ids", "5000", "--requests", str(cifar)]) == 0
    assert main(["file-request", "--ids", "5000", "--requests", str(cifar)]) == 2
    assert (
        "already named by an earlier request" in capsys.readouterr().err
    )  # cifar10's queue, cifar10's index
    assert main(["file-request", "--ids", "12"]) == 0
    assert [r.sample_ids for r in load_requests(cifar)] == [(5000,)]
    assert [r.sample_ids for r in load_requests(base)] == [(12,)]
    other = tmp_path / "queue"  # not laid out as in the catalog: its index must be named
    other.mkdir()
    assert main(["file-request", "--ids", "5000", "--requests", str(other)]) == 2
    assert "cannot tell which sample index belongs to --requests" in capsys.readouterr().err
    assert list(other.iterdir()) == []
    args = ["--ids", "5000", "--requests", str(other), "--index", str(cifar_index)]
    assert main(["file-request", *args]) == 0


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in folder.rglob("*") if f.is_file()}


def _queue_with_history(tmp_path: Path) -> tuple[Path, Path]:
    """A conf/base-like data folder with two processed requests and their outputs."""
    data = tmp_path / "data"
    requests = data / "01_raw" / "deletion_requests"
    requests.mkdir(parents=True)
    _index(tmp_path, name="data/02_intermediate/sample_index.csv")
    assert main(["file-request", "--requests", str(requests), "--ids", "1,2"]) == 0
    assert main(["file-request", "--requests", str(requests), "--classes", "1"]) == 0
    _process(
        data / "06_models" / "states",
        data / "08_reporting" / "ledger.csv",
        ["req-0001", "req-0002"],
    )
    for folder in ("08_reporting/requests/req-0001", "06_models/retrained/req-0002/shadow/0-with"):
        (data / folder).mkdir(parents=True)
        (data / folder / "file").write_text(folder)
    (data / "06_models/retrained/.gitignore").write_text("/req-*\n")  # git's: stays
    (data / "08_reporting/unlearn_last_run.json").write_text("{}")
    (data / "07_model_output/cgs_preview").mkdir(parents=True)
    (data / "07_model_output/cgs_preview/layers.csv").write_text("layer\n")
    (data / "02_intermediate" / "other.txt").write_text("not a request's")
    # a purge's tombstone of R_full: the queue's, so it goes with it (a new queue collects R_full)
    (data / "06_models/states/original/retain_stats.safetensors.purged").write_text("purged\n")
    return data, requests


def test_archive_moves_a_queue_s_whole_history_aside_and_starts_an_empty_queue(tmp_path, capsys):
    data, requests = _queue_with_history(tmp_path)
    before = _tree(data)
    capsys.readouterr()

    assert main(["archive", "--requests", str(requests), "--dry-run"]) == 0
    assert "would move" in capsys.readouterr().out
    assert _tree(data) == before

    assert main(["archive", "--requests", str(requests)]) == 0
    out = capsys.readouterr().out
    (archive,) = (data / "archive").iterdir()  # <root>/archive/<UTC stamp>/
    stay = ("02_intermediate", "06_models/states/original", "06_models/retrained/.gitignore")
    moved = {k for k in before if not k.startswith(stay) or k.endswith(".purged")}
    assert "06_models/states/original/retain_stats.safetensors.purged" in moved
    # copied: the original the ledger's first request started from, the index its ids name
    copied = ["06_models/states/original/model.safetensors", "02_intermediate/sample_index.csv"]
    assert _tree(archive) == {k: before[k] for k in [*moved, *copied]}  # every byte, its path
    assert {k: v for k, v in _tree(data).items() if not k.startswith("archive")} == {
        k: v for k, v in before.items() if k not in moved
    } | {"01_raw/deletion_requests/queue.yml": (requests / "queue.yml").read_bytes()}
    assert load_requests(requests) == []
    assert "holds models that saw the samples" in out and ".dvc/cache" in out
    # the new queue starts over: ids restart and may name samples the old queue forgot
    assert main(["file-request", "--requests", str(requests), "--ids", "1,2,3"]) == 0
    assert [r.id for r in load_requests(requests)] == ["req-0001"]
    assert main(["archive", "--requests", str(requests)]) == 0
    out = capsys.readouterr().out
    assert "holds models" not in out and "copied" in out  # a request file and its index
    assert main(["archive", "--requests", str(requests)]) == 0
    assert "nothing to archive" in capsys.readouterr().out


def test_archive_is_all_or_nothing_and_never_mixes_two_archives(tmp_path, monkeypatch):
    import shutil

    from pgu.core import retention

    data, requests = _queue_with_history(tmp_path)
    before = _tree(data)
    real_move, calls = shutil.move, []

    def failing_move(src, dst):
        calls.append(src)
        if len(calls) == 4:  # the disk fills up on the fourth item
            raise OSError(28, "No space left on device")
        return real_move(src, dst)

    monkeypatch.setattr(retention.shutil, "move", failing_move)
    with pytest.raises(
        OSError, match=r"failed .*No space left.* moved back, so the queue is as it was"
    ):
        retention.archive_queue(requests, "S")
    monkeypatch.setattr(retention.shutil, "move", real_move)
    assert {k: v for k, v in _tree(data).items() if not k.startswith("archive")} == before
    assert not (data / "archive" / "S").exists()

    retention.archive_queue(requests, "S")
    assert main(["file-request", "--requests", str(requests), "--ids", "5"]) == 0
    retention.archive_queue(requests, "S")  # the same stamp: a folder of its own
    assert sorted(p.name for p in (data / "archive").iterdir()) == ["S", "S-2"]
    assert (data / "archive/S-2/01_raw/deletion_requests/req-0001.yml").read_text().count("5")


def test_archive_keeps_another_environment_s_layout_and_refuses_an_unknown_one(tmp_path, capsys):
    requests = tmp_path / "data" / "01_raw" / "cifar10" / "deletion_requests"
    requests.mkdir(parents=True)
    _index(tmp_path, name="data/02_intermediate/cifar10/sample_index.csv")
    assert main(["file-request", "--requests", str(requests), "--ids", "3"]) == 0
    assert main(["archive", "--requests", str(requests)]) == 0
    (archive,) = (tmp_path / "data" / "archive" / "cifar10").iterdir()
    assert (archive / "01_raw" / "cifar10" / "deletion_requests" / "req-0001.yml").is_file()
    capsys.readouterr()
    assert main(["archive", "--requests", str(tmp_path / "requests")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pgu-admin: ") and "01_raw/<sub>/deletion_requests" in err


def test_classes_may_be_named_as_the_data_pipeline_stored_them(tmp_path, capsys):
    from pgu.core.checkpoint import tensors_to_bytes

    folder, index = tmp_path / "requests", _index(tmp_path)
    common = ["--requests", str(folder), "--index", str(index)]
    assert main(["file-request", "--classes", "virginica", *common]) == 2
    assert "label=name: unknown here" in capsys.readouterr().err  # no bundle beside the index
    meta = {"classes": ["setosa", "versicolor"]}
    (tmp_path / "samples.safetensors").write_bytes(tensors_to_bytes({"x": torch.zeros(1)}, meta))
    assert main(["file-request", "--classes", "virginica", *common]) == 2
    assert "(the classes, label=name: 0=setosa, 1=versicolor)" in capsys.readouterr().err
    assert not folder.exists() or not list(folder.glob("req-*.yml"))
    assert main(["file-request", "--classes", "versicolor", *common]) == 0
    assert load_requests(folder)[-1].classes == (1,)


def test_a_number_that_names_another_class_is_refused_not_guessed(tmp_path, capsys):
    from pgu.core.checkpoint import tensors_to_bytes

    # a CSV whose labels are 1 and 2: stored as labels 0 and 1, named '1' and '2'
    folder, index = tmp_path / "requests", _index(tmp_path)
    meta = {"classes": ["1", "2"]}
    (tmp_path / "samples.safetensors").write_bytes(tensors_to_bytes({"x": torch.zeros(1)}, meta))
    common = ["--requests", str(folder), "--index", str(index)]
    assert main(["file-request", "--classes", "1", *common]) == 2
    err = capsys.readouterr().err
    assert "'1' is ambiguous" in err and "write label:1 or name:1 (label=name: 0=1, 1=2)" in err
    assert main(["file-request", "--classes", "name:1", *common]) == 0  # spelled out
    assert load_requests(folder)[-1].classes == (0,)
    assert main(["file-request", "--classes", "label:1", *common]) == 2  # class 0 is filed
    assert "every training sample" in capsys.readouterr().err  # ... but label:1 was read as 1
    assert main(["file-request", "--classes", "2", *common]) == 2  # no label 2: the name '2'
    assert "every training sample" in capsys.readouterr().err  # read as class 1, not range
    assert main(["file-request", "--classes", "label:x", *common]) == 2
    assert "a label is an integer" in capsys.readouterr().err


def test_archive_does_not_pass_a_retrained_original_off_as_the_ledger_s(tmp_path, capsys):
    data, requests = _queue_with_history(tmp_path)
    (data / "06_models/states/original/model.safetensors").write_bytes(b"trained on new data")
    capsys.readouterr()
    assert main(["archive", "--requests", str(requests)]) == 0
    assert "not copied: " in capsys.readouterr().out
    (archive,) = (data / "archive").iterdir()
    assert not (archive / "06_models/states/original/model.safetensors").exists()
    # verify reads an archive in place; it keeps no sample bundle, so the data check is skipped
    assert main(["verify", "--requests", str(archive / "01_raw/deletion_requests")]) == 1
    out = capsys.readouterr().out  # (1: these made-up ledger rows hash no real request file)
    assert "skip  data: not checked" in out and "FAIL" in out


def test_withdraw_takes_a_pending_request_out_and_keeps_the_chain(tmp_path, capsys):
    folder, index = tmp_path / "requests", _index(tmp_path)
    common = ["--requests", str(folder), "--index", str(index)]
    for ids in ("1", "2", "3"):
        assert main(["file-request", "--ids", ids, *common]) == 0
    ledger = tmp_path / "ledger.csv"
    row = {c: "x" for c in COLUMNS} | {"request_id": "req-0001", "input_state": "original"}
    append_row(ledger, row)  # req-0001 processed
    capsys.readouterr()
    assert main(["withdraw", "--requests", str(folder), "req-0002"]) == 2  # which ledger?
    assert "pass --ledger" in capsys.readouterr().err
    withdraw = ["withdraw", "--requests", str(folder), "--ledger", str(ledger)]

    assert main([*withdraw, "req-0002"]) == 0  # pending: req-0003 now starts from req-0001
    assert "withdrew req-0002" in capsys.readouterr().out
    assert not (folder / "req-0002.yml").exists()
    assert [(r["id"], r["after"]) for r in read_queue(folder)] == [
        ("req-0001", "original"),
        ("req-0003", "req-0001"),
    ]
    assert [r.id for r in load_requests(folder)] == ["req-0001", "req-0003"]  # a valid queue

    before = _tree(folder)
    assert main([*withdraw, "req-0001"]) == 2  # processed: the ledger and its state are the record
    assert "was processed" in capsys.readouterr().err
    assert main([*withdraw, "req-0009"]) == 2
    assert "is not in" in capsys.readouterr().err
    assert _tree(folder) == before
    assert main([*withdraw, "req-0003"]) == 0  # the last one
    assert [r["id"] for r in read_queue(folder)] == ["req-0001"]


def test_verify_does_not_pass_a_queue_whose_ledger_is_missing(tmp_path, capsys):
    """An auditor with the repository alone has the requests and their reports (in git) but not
    the ledger: verify says it cannot check the trail, rather than 'nothing processed'."""
    data = tmp_path / "data"
    requests = data / "01_raw" / "deletion_requests"
    requests.mkdir(parents=True)
    _index(tmp_path, name="data/02_intermediate/sample_index.csv")
    assert main(["file-request", "--requests", str(requests), "--ids", "1,2"]) == 0
    capsys.readouterr()
    assert main(["verify", "--requests", str(requests)]) == 0  # filed, never processed
    assert "no request processed yet" in capsys.readouterr().out
    report = data / "08_reporting/requests/req-0001/metrics.json"
    report.parent.mkdir(parents=True)
    report.write_text("{}")  # what the unlearn stage writes for a request it processed
    assert main(["verify", "--requests", str(requests)]) == 1
    out = capsys.readouterr().out
    assert "lists no request, but" in out and "['req-0001']" in out and "Auditing a queue" in out
