"""End to end: the default pipeline (data, train, representation) on digits, as `make run` does."""

import json

import pandas as pd
import pytest
import torch

from pgu.core.checkpoint import load_tensors, sha256_file
from pgu.datasets import ModelDataset


@pytest.mark.slow
def test_default_pipeline_trains_digits_cnn_to_97_percent(kedro_project):
    kedro_project.run("__default__")
    p = kedro_project.path
    index = pd.read_csv(p / "data/02_intermediate/sample_index.csv")
    assert list(index.columns) == ["sample_id", "key", "label", "split"]
    assert len(index) == 1797 and index["sample_id"].is_unique
    metrics = json.loads((p / "data/08_reporting/train/metrics.json").read_text())
    assert metrics["test_acc"] >= 0.97
    model_file = p / "data/06_models/states/original/model.safetensors"
    assert metrics["model_sha256"] == sha256_file(model_file)
    model = ModelDataset(filepath=str(model_file)).load()
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    history = json.loads((p / "data/08_reporting/train/history.json").read_text())
    assert len(history) == 20 and history[-1]["val_acc"] > 0.95
    # The default pipeline also collects R_full with the model it trained (for the requests).
    _, meta = load_tensors(p / "data/06_models/states/original/retain_stats.safetensors")
    assert meta["stats_model_sha256"] == metrics["model_sha256"]
    png = (p / "data/08_reporting/train/learning_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.slow
def test_train_pipeline_reruns_to_identical_bytes_and_honours_exclusions(kedro_project):
    short = {"train": {"recipe": {"epochs": 2}}}
    kedro_project.run("data", "train", params=short)
    model_file = kedro_project.path / "data/06_models/states/original/model.safetensors"
    first = sha256_file(model_file)
    kedro_project.run("train", params=short)
    assert sha256_file(model_file) == first
    kedro_project.run(
        "train", params={"train": {"recipe": {"epochs": 2}, "exclude_sample_ids": [0, 2]}}
    )
    assert sha256_file(model_file) != first


def test_missing_source_fails_with_a_clear_error(kedro_project):
    with pytest.raises(Exception, match="cifar-10-batches-py"):
        kedro_project.run("data", params={"data": {"source": "cifar10"}})
