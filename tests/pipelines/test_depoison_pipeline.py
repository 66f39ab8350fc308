"""End to end: data + depoison on digits (short training), the tag split DVC uses, and what
the outputs must show: the flips undone, plain loadable models, S folded in exactly."""

import json
import os

import pandas as pd
import pytest
from conftest import KedroProject

from pgu.core.checkpoint import sha256_file
from pgu.datasets import ModelDataset

pytestmark = pytest.mark.slow

SHORT = {"train": {"recipe": {"epochs": 4}}, "depoison": {"config": {"epochs": 3}}}
MODELS = "data/06_models/depoison"
REPORTS = "data/08_reporting/depoison"


def run_tags(project: KedroProject, pipeline: str, tags: list[str], params: dict) -> None:
    """Like ``KedroProject.run``, for one pipeline restricted to ``tags`` (as DVC runs it)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    cwd = os.getcwd()
    os.chdir(project.path)
    try:
        bootstrap_project(project.path)
        with KedroSession.create(project_path=project.path, runtime_params=params) as session:
            session.run(pipeline_names=[pipeline], tags=tags)
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> KedroProject:
    project = KedroProject.create(tmp_path_factory.mktemp("depoison") / "p")
    project.run("data", "depoison", params=SHORT)
    return project


def test_depoisoning_undoes_the_flips_with_plain_models(project):
    p = project.path
    scenario = pd.read_csv(p / "data/03_primary/depoison/poisoned_samples.csv")
    assert list(scenario.columns) == ["sample_id", "true_label", "wrong_label", "pair"]
    assert len(scenario) == 2 * 5 * 40 and scenario["sample_id"].is_unique
    index = pd.read_csv(p / "data/02_intermediate/sample_index.csv").set_index("sample_id")
    assert (index.loc[scenario["sample_id"], "split"] == "train").all()
    assert (index.loc[scenario["sample_id"], "label"].to_numpy() == scenario["true_label"]).all()

    metrics = json.loads((p / REPORTS / "metrics.json").read_text())
    m = metrics["models"]
    # the poisoned model learnt some flips, the clean one none; de-poisoning undoes them
    assert m["poisoned"]["poisoned_wrong_acc"] > m["clean"]["poisoned_wrong_acc"]
    assert m["depoisoned"]["poisoned_true_acc"] > m["poisoned"]["poisoned_true_acc"]
    assert m["depoisoned"]["poisoned_wrong_acc"] < m["poisoned"]["poisoned_wrong_acc"]
    assert m["depoisoned"]["test_acc"] > m["poisoned"]["test_acc"]
    assert metrics["test_gap_recovered"] > 0
    assert metrics["depoison"]["trust_region_layer"] == "classifier.fc2"

    # every model file is a plain registry model whose hash the metrics record
    for name in ("poisoned", "depoisoned", "clean"):
        path = p / MODELS / f"{name}.safetensors"
        assert m[name]["model_sha256"] == sha256_file(path)
        model = ModelDataset(filepath=str(path)).load()
        assert list(model.state_dict()) == list(
            ModelDataset(filepath=str(p / MODELS / "poisoned.safetensors")).load().state_dict()
        )

    # S was learnt (S != I) and folded: the plain saved model reproduces, on every set, the
    # accuracies the kept epoch had with the trust-region layer computing W + W M (S - I) M^T
    history = json.loads((p / REPORTS / "history.json").read_text())
    kept = next(h for h in history if h["epoch"] == metrics["depoison"]["kept_epoch"])
    assert kept["epoch"] >= 1 and kept["scale_dev"] > 0
    for key in ("test_acc", "clean_train_acc", "poisoned_true_acc", "poisoned_wrong_acc"):
        assert m["depoisoned"][key] == kept[key], key
    assert history[0]["test_acc"] == m["poisoned"]["test_acc"]

    report = (p / REPORTS / "report.md").read_text()
    assert "| depoisoned |" in report and "classifier.fc2" in report
    assert (p / REPORTS / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_depoison_tag_reruns_to_the_same_bytes(project, tmp_path):
    clone = project.clone(tmp_path / "c")
    before = clone.files()
    run_tags(clone, "depoison", ["depoison"], SHORT)
    after = clone.files()
    assert after == before
    # the poison half was not rerun either: its files were not even rewritten
    model = clone.path / MODELS / "poisoned.safetensors"
    assert model.stat().st_mtime == (project.path / MODELS / "poisoned.safetensors").stat().st_mtime


def test_statistics_of_another_model_are_refused_and_nothing_changes(project, tmp_path):
    from pgu.datasets import TensorBundleDataset

    clone = project.clone(tmp_path / "c")
    stats_file = TensorBundleDataset(
        filepath=str(clone.path / MODELS / "poisoned_train_stats.safetensors")
    )
    bundle = stats_file.load()
    bundle.meta["stats_model_sha256"] = "0" * 64  # as if collected with another model
    stats_file.save(bundle)
    before = clone.files()
    with pytest.raises(Exception, match="another model"):
        run_tags(clone, "depoison", ["depoison"], SHORT)
    assert clone.files() == before
