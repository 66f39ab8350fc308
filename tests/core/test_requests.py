"""Deletion requests: parsing, the queue, validation against the sample index, filing."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pgu.core.requests import (
    RequestError,
    file_request,
    load_requests,
    parse_request,
    read_queue,
    resolve,
)


@pytest.fixture
def index() -> pd.DataFrame:
    # ids 0..11; labels cycle 0,1,2; ids 9..11 are val/test
    split = ["train"] * 9 + ["val", "test", "val"]
    return pd.DataFrame({"sample_id": np.arange(12), "label": np.arange(12) % 3, "split": split})


def _write(folder, name, text):
    path = folder / f"{name}.yml"
    path.write_text(text)
    return path


def test_parse_valid_request(tmp_path):
    path = _write(
        tmp_path, "r1", "id: r1\nforget:\n  sample_ids: [3, 1]\n  classes: [2]\nnote: hi\n"
    )
    r = parse_request(path)
    assert (r.id, r.sample_ids, r.classes, r.note, r.kind) == ("r1", (3, 1), (2,), "hi", "classes")
    assert len(r.sha256) == 64


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id: other\nforget: {sample_ids: [1]}\n", "differs from the file name"),
        ("id: r1\nforget: {}\n", "empty"),
        ("id: r1\nforget: {sample_ids: []}\n", "empty"),
        ("id: r1\nforget: {sample_ids: [1, x]}\n", "list of integers"),
        ("id: r1\nforget: {ids: [1]}\n", "sample_ids and/or classes"),
        ("id: r1\nforget: {sample_ids: [1]}\nextra: 1\n", "unknown keys"),
        ("id: r1\nforget: [1, 2\n", "not valid YAML"),
        ("- 1\n- 2\n", "must be a mapping"),
        ("id: r1\nforget: {sample_ids: [1]}\npurpose: clean\n", "purpose 'clean' is not one"),
        ("id: r1\nforget: {classes: [1]}\npurpose: depoison\n", "mislabelled samples"),
    ],
)
def test_malformed_requests_are_rejected_with_their_reason(tmp_path, text, message):
    with pytest.raises(RequestError, match=message) as caught:
        parse_request(_write(tmp_path, "r1", text))
    # one message: no parser traceback chained above it ("The above exception was ...")
    assert caught.value.__context__ is None or caught.value.__suppress_context__


def test_resolve_checks_every_id(tmp_path, index):
    def req(text):
        return parse_request(_write(tmp_path, "r1", "id: r1\nforget: " + text + "\n"))

    none = np.empty(0, dtype=np.int64)
    assert resolve(req("{sample_ids: [4, 0]}"), index, none, 3).tolist() == [0, 4]
    assert resolve(req("{classes: [1]}"), index, none, 3).tolist() == [1, 4, 7]
    assert resolve(req("{classes: [1]}"), index, np.array([4]), 3).tolist() == [1, 7]
    assert resolve(req("{sample_ids: [0], classes: [1]}"), index, none, 3).tolist() == [0, 1, 4, 7]
    assert resolve(req("{classes: [0, 1]}"), index, none, 3).size == 6  # one class left to keep
    cases = [
        ("{sample_ids: [1, 1]}", none, "duplicate sample ids \\[1\\]"),
        ("{sample_ids: [99]}", none, "1 unknown sample id \\[99\\]"),
        (f"{{sample_ids: {list(range(100, 112))}}}", none, "12 unknown sample ids .* and more"),
        ("{sample_ids: [9]}", none, "val/test"),
        ("{sample_ids: [2]}", np.array([2]), "already named by an earlier request"),
        ("{classes: [3]}", none, "out of range"),
        ("{classes: [-1]}", none, "out of range"),
        ("{classes: [0, 0]}", none, "listed twice"),
        ("{classes: [0]}", np.array([0, 3, 6]), "no training samples left"),
        # nothing would be left to retain: no statistics, no reference, nothing to keep
        ("{classes: [0, 1, 2]}", none, "would forget every training sample still retained \\(9\\)"),
        ("{sample_ids: [1, 4, 7], classes: [2]}", np.array([0, 3, 6]), "retained \\(6\\)"),
    ]
    for text, forgotten, message in cases:
        with pytest.raises(RequestError, match=message):
            resolve(req(text), index, forgotten, 3)
    # ids the original never trained on (train.exclude_sample_ids) are not retained either
    two_classes = req("{classes: [0, 1]}")
    assert resolve(two_classes, index, none, 3, never_trained=np.array([5])).size == 6
    with pytest.raises(RequestError, match="every training sample still retained"):
        resolve(two_classes, index, none, 3, never_trained=np.array([2, 5, 8]))


def test_file_request_queues_in_order_and_refuses_overwrites(tmp_path):
    p1 = file_request(tmp_path, sample_ids=[5, 2], note="first")
    p2 = file_request(tmp_path, classes=[1])
    assert (p1.name, p2.name) == ("req-0001.yml", "req-0002.yml")
    assert read_queue(tmp_path) == [
        {"id": "req-0001", "after": "original"},
        {"id": "req-0002", "after": "req-0001"},
    ]
    requests = load_requests(tmp_path)
    assert [r.sample_ids for r in requests] == [(5, 2), ()]
    with pytest.raises(RequestError, match="immutable"):
        file_request(tmp_path, sample_ids=[1], request_id="req-0001")


def test_file_request_takes_arrays_of_ids(tmp_path):
    import torch

    file_request(tmp_path, sample_ids=np.array([7, 3], dtype=np.int64))
    file_request(tmp_path, sample_ids=torch.tensor([4]), classes=np.array([2]))
    requests = load_requests(tmp_path)
    assert [(r.sample_ids, r.classes) for r in requests] == [((7, 3), ()), ((4,), (2,))]


def test_queue_must_chain_and_list_every_file(tmp_path):
    file_request(tmp_path, sample_ids=[1])
    _write(tmp_path, "stray", "id: stray\nforget: {sample_ids: [2]}\n")
    with pytest.raises(RequestError, match="not in queue.yml"):
        load_requests(tmp_path)
    (tmp_path / "stray.yml").unlink()
    (tmp_path / "queue.yml").write_text("requests:\n  req-0001: {after: something}\n")
    with pytest.raises(RequestError, match="must start from 'original'"):
        read_queue(tmp_path)


def test_depoison_requests_parse_file_and_keep_plain_files_unchanged(tmp_path):
    plain = file_request(tmp_path, sample_ids=[5, 2])
    bad = file_request(tmp_path, sample_ids=[4, 1], purpose="depoison", note="flipped labels")
    assert "purpose" not in plain.read_text()  # a plain request's file is as it always was
    assert "purpose: depoison" in bad.read_text()
    r_plain, r_bad = load_requests(tmp_path)
    assert (r_plain.purpose, r_plain.kind) == ("forget", "samples")
    assert (r_bad.purpose, r_bad.kind, r_bad.sample_ids) == ("depoison", "depoison", (4, 1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "empty"),
        ({"sample_ids": [1], "purpose": "clean"}, "purpose 'clean'"),
        ({"classes": [1], "purpose": "depoison"}, "mislabelled"),
        ({"sample_ids": [1], "request_id": "bad id"}, "letters, digits"),
    ],
)
def test_file_request_refuses_bad_input_before_writing(tmp_path, kwargs, message):
    file_request(tmp_path, sample_ids=[3])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RequestError, match=message):
        file_request(tmp_path, **kwargs)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("id: r1\nforget: {sample_ids: [0, 2]}\nforget: {classes: [1]}\n", "forget"),
        ("id: r1\nforget:\n  sample_ids: [0]\n  sample_ids: [2]\n", "sample_ids"),
    ],
)
def test_a_repeated_key_is_refused_not_half_read(tmp_path, text, key):
    with pytest.raises(RequestError, match=f"r1.yml: key '{key}' appears twice"):
        parse_request(_write(tmp_path, "r1", text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("requests:\n  req-0001: {after: original\n", "queue.yml is not valid YAML"),
        ("- req-0001\n", "queue.yml must be a mapping `requests:"),
        ("requests:\n  a: {after: original}\n  a: {after: original}\n", "key 'a' appears twice"),
        ("requests:\n  a: {after: original}\nrequests: {}\n", "key 'requests' appears twice"),
        ("requests:\n  0001: {after: original}\n", "ids must be strings.*quote"),
    ],
)
def test_a_malformed_queue_names_the_file_and_its_shape(tmp_path, text, message):
    (tmp_path / "queue.yml").write_text(text)
    with pytest.raises(RequestError, match=message):
        read_queue(tmp_path)


@pytest.mark.parametrize("name", ["req-0002.yaml", "req-0002.YML"])
def test_a_request_file_not_named_id_yml_is_refused_not_skipped(tmp_path, name):
    file_request(tmp_path, sample_ids=[1])
    (tmp_path / name).write_text("id: req-0002\nforget: {sample_ids: [2]}\n")
    with pytest.raises(RequestError, match=f"{name}.*must be named <id>.yml"):
        load_requests(tmp_path)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("original", "id: original\nforget: {sample_ids: [1]}\n", "'original' is reserved"),
        ("r1", "forget: {sample_ids: [1]}\n", "the id is missing; add `id: r1`"),
        ("r1", "id: r1\nforget: {sample_id: [1]}\n", "unknown keys \\['sample_id'\\] under forget"),
        ("r1", "id: r1\nforget: {sample_ids: [99999999999999999999]}\n", "99999999999999999999"),
    ],
)
def test_request_errors_name_the_actual_problem(tmp_path, name, text, message):
    with pytest.raises(RequestError, match=message):
        parse_request(_write(tmp_path, name, text))


def test_a_huge_id_is_a_request_error_not_an_overflow(tmp_path, index):
    from pgu.core.requests import DeletionRequest

    huge = DeletionRequest("r1", (99999999999999999999,), (), "", "")
    with pytest.raises(RequestError, match="99999999999999999999.*out of range"):
        resolve(huge, index, np.empty(0, dtype=np.int64), 3)
    with pytest.raises(RequestError, match="99999999999999999999.*out of range"):
        file_request(tmp_path, sample_ids=[99999999999999999999])
    with pytest.raises(RequestError, match="'original' is reserved"):
        file_request(tmp_path, sample_ids=[1], request_id="original")
    assert list(tmp_path.iterdir()) == []


def test_new_ids_go_past_every_id_in_the_queue_files_and_ledger(tmp_path):
    from pgu.core.ledger import COLUMNS, append_row
    from pgu.core.requests import default_ledger

    folder = tmp_path / "data/01_raw/deletion_requests"
    folder.parent.mkdir(parents=True)
    ledger = default_ledger(folder)
    assert ledger == tmp_path / "data/08_reporting/ledger.csv"
    assert default_ledger("data/01_raw/cifar10/deletion_requests") == Path(
        "data/08_reporting/cifar10/ledger.csv"
    )
    file_request(folder, sample_ids=[1])
    file_request(folder, sample_ids=[2])
    append_row(ledger, {c: "x" for c in COLUMNS} | {"request_id": "req-0001"})
    append_row(ledger, {c: "x" for c in COLUMNS} | {"request_id": "req-0002"})
    # req-0002 deleted by hand, with its queue line: its id is still taken by the ledger
    (folder / "req-0002.yml").unlink()
    (folder / "queue.yml").write_text("requests:\n  req-0001: {after: original}\n")
    assert file_request(folder, sample_ids=[3]).name == "req-0003.yml"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(RequestError, match="'req-0002' is in the ledger"):
        file_request(folder, sample_ids=[4], request_id="req-0002")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_file_request_refuses_to_create_a_tree_outside_a_project(tmp_path):
    with pytest.raises(RequestError, match="01_raw does not exist"):
        file_request(tmp_path / "data/01_raw/deletion_requests", sample_ids=[1])
    assert list(tmp_path.iterdir()) == []


def test_later_plans_know_which_classes_earlier_requests_removed(tmp_path, index):
    """A removed class's val samples leave the stopping rule's val set of later requests."""
    import torch

    from pgu.core.data import SampleSet
    from pgu.core.deletion import held_out, plan_requests

    file_request(tmp_path, classes=[1])
    file_request(tmp_path, sample_ids=[0])
    file_request(tmp_path, classes=[2])
    file_request(tmp_path, sample_ids=[3])
    plans = plan_requests(load_requests(tmp_path), index, 3, set())
    assert [p.removed_classes for p in plans] == [(), (1,), (1,), (1, 2)]
    samples = SampleSet(
        torch.zeros(12, 1, 2, 2, dtype=torch.uint8),
        torch.as_tensor(index["label"].to_numpy()),
        torch.as_tensor(index["sample_id"].to_numpy()),
        torch.zeros(1),
        torch.ones(1),
        num_classes=3,
    )
    # the val split is ids 9 (label 0) and 11 (label 2)
    assert held_out(samples, index, plans[1]).sample_id.tolist() == [9, 11]
    assert held_out(samples, index, plans[3]).sample_id.tolist() == [9]


def test_a_lost_queue_or_request_file_is_named_with_its_fix(tmp_path):
    from pgu.core.requests import QUEUE_FILE, RequestError, file_request, load_requests

    folder = tmp_path / "deletion_requests"
    folder.mkdir()
    file_request(folder, sample_ids=[1, 2])
    file_request(folder, sample_ids=[3])
    (folder / "req-0002.yml").unlink()
    with pytest.raises(RequestError, match=r"have no file .*pgu-admin withdraw req-0002"):
        load_requests(folder)
    (folder / QUEUE_FILE).unlink()  # the files are there, their order is not
    with pytest.raises(RequestError, match=r"queue.yml is missing, and it holds the order"):
        load_requests(folder)
