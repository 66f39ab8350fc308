"""End to end: representation → unlearn on digits, the ledger's chain, and bad requests."""

import json

import pandas as pd
import pytest
import torch
import yaml
from conftest import KedroProject

from pgu.admin import main as admin_main
from pgu.core.checkpoint import TensorBundle, load_tensors, save_tensors, sha256_file
from pgu.core.data import SampleSet, split_ids
from pgu.core.deletion import execute_request, plan_requests
from pgu.core.ledger import read_ledger
from pgu.core.requests import file_request, load_requests
from pgu.core.state import StateStore
from pgu.core.training import resolve_device
from pgu.core.unlearning import UnlearnConfig

pytestmark = pytest.mark.slow
REQUESTS = "data/01_raw/deletion_requests"
LEDGER = "data/08_reporting/ledger.csv"


@pytest.fixture
def project(trained_project, tmp_path) -> KedroProject:
    return trained_project.clone(tmp_path / "p")


def _train_ids(project: KedroProject) -> pd.DataFrame:
    return pd.read_csv(project.path / "data/02_intermediate/sample_index.csv")


def test_two_requests_chain_in_the_ledger_and_persist_no_forget_statistics(project):
    index = _train_ids(project)
    train = split_ids(index, "train")
    file_request(project.path / REQUESTS, sample_ids=train[:40:2].tolist(), note="random ids")
    file_request(project.path / REQUESTS, classes=[3])
    project.run("unlearn")
    ledger = read_ledger(project.path / "data/08_reporting/ledger.csv")
    assert ledger["request_id"].tolist() == ["req-0001", "req-0002"]
    assert ledger.loc[1, "input_model_sha256"] == ledger.loc[0, "output_model_sha256"]
    assert ledger.loc[1, "input_stats_sha256"] == ledger.loc[0, "output_stats_sha256"]
    states = project.path / "data/06_models/states"
    assert ledger.loc[0, "input_model_sha256"] == sha256_file(states / "original/model.safetensors")
    assert ledger.loc[1, "output_model_sha256"] == sha256_file(
        states / "req-0002/model.safetensors"
    )
    assert (ledger["stats_model_sha256"] == ledger.loc[0, "input_model_sha256"]).all()
    # Class removal really removes the class from the forget set's predictions.
    metrics = json.loads(
        (project.path / "data/08_reporting/requests/req-0002/metrics.json").read_text(),
        parse_constant=lambda name: pytest.fail(f"metrics.json holds {name}: not strict JSON"),
    )
    assert metrics["history"][0]["loss"] is None  # epoch 0 has no loss: null, not NaN
    assert metrics["forget_acc_after"] <= 0.05 < metrics["forget_acc_before"]
    # The second request's target and guard read the original's val metrics, not its start's.
    first = json.loads(
        (project.path / "data/08_reporting/requests/req-0001/metrics.json").read_text()
    )
    assert first["history"][0]["ref_val_acc"] == first["history"][0]["val_acc"]
    assert metrics["history"][0]["ref_val_acc"] == first["history"][0]["val_acc"]
    assert metrics["history"][0]["ref_val_loss"] == first["history"][0]["val_loss"]
    # The report (tracked in git) carries the ledger's hashes, so the two can be tied together.
    row = ledger.loc[1]
    assert metrics["sha256"] == {
        "request": row["request_sha256"],
        "input_model": row["input_model_sha256"],
        "input_stats": row["input_stats_sha256"],
        "output_model": row["output_model_sha256"],
        "output_retain_stats": row["output_stats_sha256"],
        "output_bases": row["bases_sha256"],
    }
    assert metrics["environment"]["device"] == "cpu" and metrics["environment"]["torch"]
    # The report records the settings the request ran with, as the ledger records gamma.
    params = metrics["parameters"]
    assert params["cgs"]["gamma"] == ledger.loc[1, "gamma"]
    conf = yaml.safe_load((project.path / "conf/base/parameters_unlearn.yml").read_text())
    assert UnlearnConfig.from_params(params["unlearn"]) == UnlearnConfig.from_params(
        conf["unlearn"]["config"]
    )
    # Stored retain statistics = full − both forget sets; nothing else derived from them is kept.
    files = sorted(p.name for p in (states / "req-0002").iterdir())
    assert files == ["bases.safetensors", "model.safetensors", "retain_stats.safetensors"]
    assert "sample_ids" not in ledger.columns
    # A second run finds nothing pending and changes nothing.
    before = project.files()
    project.run("unlearn")
    after = project.files()
    assert {k: v for k, v in after.items() if "unlearn_last_run" not in k} == {
        k: v for k, v in before.items() if "unlearn_last_run" not in k
    }


@pytest.mark.parametrize(
    ("forget", "message"),
    [
        ({"sample_ids": [10**6]}, "unknown sample id"),
        ({"sample_ids": "val"}, "in the val/test splits"),
        ({"sample_ids": "dup"}, "duplicate sample ids"),
        ({"sample_ids": "again"}, "already named by an earlier request"),
        ({"classes": [10]}, "out of range"),
    ],
)
def test_bad_request_is_rejected_and_leaves_every_file_unchanged(project, forget, message):
    index = _train_ids(project)
    train, val = split_ids(index, "train"), split_ids(index, "val")
    file_request(project.path / REQUESTS, sample_ids=train[:5].tolist())
    project.run("unlearn")
    ids = {"val": val[:2].tolist(), "dup": [int(train[7])] * 2, "again": train[:1].tolist()}
    if isinstance(forget.get("sample_ids"), str):
        forget = {"sample_ids": ids[forget["sample_ids"]]}
    file_request(project.path / REQUESTS, **forget)
    before = project.files()
    with pytest.raises(Exception, match=message):
        project.run("unlearn")
    assert project.files() == before


def test_a_rebuilt_sample_index_is_refused_before_anything_is_written(project):
    """The data pipeline rerun with another split after a request was processed: ids resolved
    against the new index would be subtracted from an R_full that never summed them (some were
    val samples then). Planning refuses, naming the fix; nothing changes. Restoring the old
    index and bundle makes the same queue go through."""
    index = _train_ids(project)
    file_request(project.path / REQUESTS, sample_ids=split_ids(index, "train")[:4].tolist())
    project.run("unlearn")
    intermediate = project.path / "data/02_intermediate"
    kept = {p.name: p.read_bytes() for p in intermediate.iterdir()}
    project.run("data", params={"data": {"split": {"seed": 1}}})
    rebuilt = _train_ids(project)
    was_val = set(split_ids(index, "val")) & set(split_ids(rebuilt, "train"))
    file_request(project.path / REQUESTS, sample_ids=sorted(was_val)[:3])
    before = project.files()
    for pipeline in ("unlearn", "cgs", "evaluate"):
        with pytest.raises(Exception, match=r"not the data the original model's statistics"):
            project.run(pipeline)
        assert project.files() == before, pipeline
    for name, data in kept.items():  # `dvc checkout` of the data pipeline's outputs
        (intermediate / name).write_bytes(data)
    (project.path / REQUESTS / "req-0002.yml").unlink()
    queue = project.path / REQUESTS / "queue.yml"
    queue.write_text(queue.read_text().replace("  req-0002: {after: req-0001}\n", ""))
    file_request(project.path / REQUESTS, sample_ids=split_ids(index, "train")[4:7].tolist())
    project.run("unlearn")
    ledger = read_ledger(project.path / "data/08_reporting/ledger.csv")
    assert ledger["request_id"].tolist() == ["req-0001", "req-0002"]


def test_samples_left_out_of_training_are_left_out_of_r_full_and_requests(project):
    """train.exclude_sample_ids: R_full sums what the model trained on, a request naming an
    excluded id is refused (nothing to forget), a class request forgets the rest of its class,
    and ids that are not training samples are refused before training."""
    train = split_ids(_train_ids(project), "train")
    y = (
        SampleSet.from_tensors(
            load_tensors(project.path / "data/02_intermediate/samples.safetensors")[0]
        )
        .with_ids(train)
        .y
    )
    out = [int(i) for i in train[y == 3][:2]] + [int(train[0])]
    params = {"train": {"recipe": {"epochs": 2}, "exclude_sample_ids": out}}
    project.run("train", "representation", params=params)
    stats = project.path / "data/06_models/states/original/retain_stats.safetensors"
    meta = load_tensors(stats)[1]
    assert meta["excluded_sample_ids"] == sorted(out) and meta["n_samples"] == len(train) - 3
    file_request(project.path / REQUESTS, sample_ids=[int(train[0]), int(train[1])])
    before = project.files()
    with pytest.raises(Exception, match=r"left out of the original model's training"):
        project.run("unlearn", params=params)
    assert project.files() == before
    (project.path / REQUESTS / "req-0001.yml").unlink()
    (project.path / REQUESTS / "queue.yml").unlink()
    file_request(project.path / REQUESTS, classes=[3])
    project.run("unlearn", params=params)
    ledger = read_ledger(project.path / "data/08_reporting/ledger.csv")
    assert ledger.loc[0, "n_samples"] == int((y == 3).sum()) - 2
    # `pgu-admin purge` deletes R_full; the served state's statistics still carry what the
    # checks read: the excluded ids, and the data's fingerprint
    states = project.path / "data/06_models/states"
    purge = ["purge", "--states", str(states), "--ledger", str(project.path / LEDGER)]
    assert admin_main([*purge, "--dvc-cache", str(project.path / "no-cache")]) == 0
    assert not (states / "original/retain_stats.safetensors").exists()
    file_request(project.path / REQUESTS, sample_ids=[int(train[0])])
    with pytest.raises(Exception, match=r"left out of the original model's training"):
        project.run("unlearn", params=params)
    project.run("data", params={"data": {"split": {"seed": 1}}})
    with pytest.raises(Exception, match=r"not the data the original model's statistics"):
        project.run("cgs", params=params)
    val = split_ids(_train_ids(project), "val")
    with pytest.raises(Exception, match=r"exclude_sample_ids: \[.*\] are not training samples"):
        project.run("train", params={"train": {"exclude_sample_ids": [int(val[0])]}})


def test_a_cuda_graph_setting_that_is_not_a_boolean_is_refused_before_anything_runs(project):
    file_request(
        project.path / REQUESTS, sample_ids=split_ids(_train_ids(project), "train")[:3].tolist()
    )
    before = project.files()
    with pytest.raises(Exception, match="unlearn.cuda_graph must be true or false, got 'yes'"):
        project.run("unlearn", params={"unlearn": {"cuda_graph": "yes"}})
    assert project.files() == before


def test_request_whose_id_differs_from_its_file_is_rejected(project):
    folder = project.path / REQUESTS
    path = file_request(folder, sample_ids=[0])
    path.write_text(path.read_text().replace("id: req-0001", "id: req-9999"))
    before = project.files()
    with pytest.raises(Exception, match="differs from the file name"):
        project.run("unlearn")
    assert project.files() == before


def test_corrupt_statistics_are_refused_and_leave_every_file_unchanged(project):
    # a NaN in the stored R_full would otherwise cut that layer's basis to k = 0: unprotected
    path = project.path / "data/06_models/states/original/retain_stats.safetensors"
    tensors, meta = load_tensors(path)
    tensors["features.conv2"][5, 7] = float("nan")
    save_tensors(path, tensors, meta)
    file_request(project.path / REQUESTS, sample_ids=split_ids(_train_ids(project), "train")[:5])
    before = project.files()
    with pytest.raises(Exception, match="'features.conv2': the stored statistics .* NaN"):
        project.run("unlearn")
    assert project.files() == before


def test_unlearning_never_reads_the_retain_samples(project):
    """The same request with every retain sample removed from the data gives the same model."""
    p = project.path
    index = _train_ids(project)
    train = split_ids(index, "train")
    file_request(p / REQUESTS, sample_ids=train[::10].tolist())
    tensors, meta = load_tensors(p / "data/02_intermediate/samples.safetensors")
    full = SampleSet.from_tensors(tensors)
    plan = plan_requests(load_requests(p / REQUESTS), index, 10, set())[0]
    keep = set(plan.forget_ids.tolist()) | set(split_ids(index, "val").tolist())
    no_retain = full.with_ids(sorted(keep))
    outputs = []
    for samples, name in ((full, "a"), (no_retain, "b")):
        execute_request(
            plan,
            StateStore(p / "data/06_models/states"),
            samples,
            index,
            {"gamma": 0.95},
            UnlearnConfig(),
            p / f"reports-{name}",
            p / f"ledger-{name}.csv",
            resolve_device("cpu"),
        )
        outputs.append((p / "data/06_models/states/req-0001/model.safetensors").read_bytes())
    assert outputs[0] == outputs[1]
    assert len(no_retain) < len(full) / 3


def test_retain_statistics_equal_full_minus_forget(project):
    index = _train_ids(project)
    train = split_ids(index, "train")
    file_request(project.path / REQUESTS, sample_ids=train[:30].tolist())
    project.run("unlearn")
    states = project.path / "data/06_models/states"
    full, _ = load_tensors(states / "original/retain_stats.safetensors")
    retain, meta = load_tensors(states / "req-0001/retain_stats.safetensors")
    from pgu.core.representation import collect_representations
    from pgu.datasets import ModelDataset

    model = ModelDataset(filepath=str(states / "original/model.safetensors")).load()
    samples = SampleSet.from_tensors(
        load_tensors(project.path / "data/02_intermediate/samples.safetensors")[0]
    )
    direct = collect_representations(model, samples.with_ids(train[30:]).batches(128))
    for name, r in direct.items():
        rel = torch.linalg.norm(retain[name] - r) / torch.linalg.norm(r)
        assert rel < 1e-10, name
    assert isinstance(TensorBundle(retain, meta).meta["stats_model_sha256"], str)


def test_cgs_pipeline_previews_bases_without_writing_a_state(project):
    train = split_ids(_train_ids(project), "train")
    file_request(project.path / REQUESTS, sample_ids=train[:25].tolist())
    project.run("cgs")
    table = pd.read_csv(project.path / "data/07_model_output/cgs_preview/layers.csv")
    assert {"features.conv1", "features.conv2", "classifier.fc2"} <= set(table["layer"])
    assert ((table["k"] > 0) & (table["k"] <= table["d"])).all()
    assert (table["gamma"] == 0.95).all()
    assert (project.path / "data/07_model_output/cgs_preview/spectrum.png").is_file()
    assert not (project.path / "data/06_models/states/req-0001").exists()


def test_a_depoison_request_runs_the_depoisoning_loop_and_is_recorded(project):
    """`purpose: depoison` runs METHOD §7's loop on the stored labels, through the same ledger."""
    index = _train_ids(project)
    ids = split_ids(index, "train")[:30].tolist()
    file_request(project.path / REQUESTS, sample_ids=ids, purpose="depoison", note="bad labels")
    project.run("unlearn")
    ledger = read_ledger(project.path / "data/08_reporting/ledger.csv")
    assert (ledger.loc[0, "kind"], ledger.loc[0, "n_samples"]) == ("depoison", 30)
    report = project.path / "data/08_reporting/requests/req-0001"
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["kind"] == "depoison"
    params = metrics["parameters"]
    assert "unlearn" not in params and params["depoison"]["trust_region"] is True
    depoison_conf = yaml.safe_load(
        (project.path / "conf/base/parameters_depoison.yml").read_text()
    )["depoison"]["config"]
    assert params["depoison"]["w_entropy"] == depoison_conf["w_entropy"]
    # the loop pushes down the stored labels' probability: accuracy on them falls
    assert metrics["forget_acc_after"] < metrics["forget_acc_before"]
    assert ledger.loc[0, "forget_acc_after"] == round(metrics["forget_acc_after"], 6)
    assert [h["epoch"] for h in metrics["history"]][0] == 0
    assert all("forget_acc" in h and "val_acc" in h for h in metrics["history"])
    assert (report / "unlearning.png").is_file()
    states = project.path / "data/06_models/states"
    _, meta = load_tensors(states / "req-0001/retain_stats.safetensors")
    assert meta["n_forgotten_total"] == 30
    bases, _ = load_tensors(states / "req-0001/bases.safetensors")
    assert "classifier.fc2" in bases  # the trust-region layer keeps M itself, not N
    assert ledger.loc[0, "output_model_sha256"] != ledger.loc[0, "input_model_sha256"]


def test_evaluate_audits_what_a_purge_left_and_names_the_rest(project):
    """After `pgu-admin purge` the superseded requests' states are empty: the default audit
    skips the requests that need them (with a warning: the served one's start state is gone
    too) and audits a request filed since, instead of refusing to run."""
    train = split_ids(_train_ids(project), "train")
    for ids in (train[:3], train[3:6]):
        file_request(project.path / REQUESTS, sample_ids=ids.tolist())
    project.run("unlearn")
    states = project.path / "data/06_models/states"
    purge = ["purge", "--states", str(states), "--ledger", str(project.path / LEDGER)]
    assert admin_main([*purge, "--dvc-cache", str(project.path / "no-cache")]) == 0
    assert {p.name for p in (states / "req-0001").iterdir()} == {  # tombstones only
        "model.safetensors.purged",
        "retain_stats.safetensors.purged",
        "bases.safetensors.purged",
    }
    file_request(project.path / REQUESTS, sample_ids=train[6:9].tolist())
    project.run("unlearn")
    quick = {"n_shadow": 0, "baselines": []}
    params = {"evaluate": quick, "train": {"recipe": {"epochs": 1}}}
    project.run("evaluate", params=params)
    reports = project.path / "data/08_reporting/requests"
    assert (reports / "req-0003/evaluation.json").is_file()
    assert not (reports / "req-0001/evaluation.json").exists()
    assert not (reports / "req-0002/evaluation.json").exists()
    params["evaluate"] = {**quick, "request_id": "req-0001"}  # named: the state check says why
    with pytest.raises(Exception, match="req-0001/model.safetensors is missing"):
        project.run("evaluate", params=params)
