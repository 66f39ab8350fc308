"""Kedro datasets for safetensors: round trips, atomicity, clear errors, previews."""

import json

import pytest
import torch
from kedro.io.core import DatasetError

from pgu.core.checkpoint import TensorBundle, build_from_spec, model_spec
from pgu.datasets import ModelDataset, TensorBundleDataset


def test_tensor_bundle_round_trip_and_preview(tmp_path):
    ds = TensorBundleDataset(filepath=str(tmp_path / "r.safetensors"))
    assert not ds.exists()
    ds.save(TensorBundle({"fc": torch.eye(4, dtype=torch.float64)}, {"model_sha256": "abc"}))
    assert ds.exists()
    back = ds.load()
    assert torch.equal(back.tensors["fc"], torch.eye(4, dtype=torch.float64))
    assert back.meta == {"model_sha256": "abc"}
    assert json.loads(ds.preview())["tensors"] == {"fc": [4, 4]}


def test_model_dataset_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_from_spec(model_spec("mlp", (5,), 3))
    ds = ModelDataset(filepath=str(tmp_path / "m.safetensors"))
    ds.save(model)
    back = ds.load()
    x = torch.randn(4, 5)
    model.eval()
    assert torch.allclose(back(x), model(x))
    assert json.loads(ds.preview())["spec"]["name"] == "mlp"


def test_corrupt_model_file_names_the_fix(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"not a model")
    with pytest.raises(
        DatasetError, match="dvc checkout.*original model: `kedro run --pipelines train`"
    ):
        ModelDataset(filepath=str(path)).load()
    with pytest.raises(DatasetError, match="dvc checkout.*samples: `kedro run --pipelines data`"):
        TensorBundleDataset(filepath=str(path)).load()
    with pytest.raises(DatasetError, match="does not exist"):
        ModelDataset(filepath=str(tmp_path / "none.safetensors")).load()
