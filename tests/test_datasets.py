"""Kedro datasets for safetensors: round trips, atomicity, clear errors, previews."""

import json
from pathlib import Path

import pytest
import torch
from kedro.io.core import DatasetError

from pgu.core.checkpoint import TensorBundle, build_from_spec, model_spec
from pgu.datasets import MadeByCSVDataset, ModelDataset, TensorBundleDataset


def test_tensor_bundle_round_trip_and_preview(tmp_path):
    ds = TensorBundleDataset(filepath=str(tmp_path / "r.safetensors"))
    assert not ds.exists()
    ds.save(TensorBundle({"fc": torch.eye(4, dtype=torch.float64)}, {"model_sha256": "abc"}))
    assert ds.exists()
    back = ds.load()
    assert torch.equal(back.tensors["fc"], torch.eye(4, dtype=torch.float64))
    assert back.meta == {"model_sha256": "abc"}
    assert json.loads(ds.preview())["tensors"] == {"fc": [4, 4]}


def test_a_save_removes_what_a_killed_write_of_the_same_file_left_behind(tmp_path):
    # SIGKILL between mkstemp and the rename leaves the whole file, hidden, beside its target
    stale = tmp_path / ".r.safetensors.k1ll3d_x.tmp"
    others = [
        tmp_path / ".other.safetensors.k1ll3d_x.tmp",  # another file's: not this write's to judge
        tmp_path / ".r.safetensors.notes.txt",  # not a temporary name
        tmp_path / ".r.safetensors.toolong12.tmp",
    ]
    for path in [stale, *others]:
        path.write_bytes(b"half a file")
    ds = TensorBundleDataset(filepath=str(tmp_path / "r.safetensors"))
    ds.save(TensorBundle({"fc": torch.eye(2)}, {}))
    assert not stale.exists()
    assert all(path.read_bytes() == b"half a file" for path in others)
    assert torch.equal(ds.load().tensors["fc"], torch.eye(2))
    assert sorted(tmp_path.glob(".*")) == sorted(others)  # nor one of its own


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


def test_a_missing_input_names_the_command_that_writes_it(tmp_path):
    model = ModelDataset(filepath=str(tmp_path / "m.safetensors"), made_by="kedro run -p train")
    with pytest.raises(DatasetError, match=r"m.safetensors does not exist; `kedro run -p train`"):
        model.load()
    index = MadeByCSVDataset(
        filepath=str(tmp_path / "index.csv"), made_by="kedro run --pipelines data"
    )
    with pytest.raises(
        DatasetError, match=r"index.csv does not exist; `kedro run --pipelines data`"
    ):
        index.load()
    (tmp_path / "index.csv").write_text("sample_id,label\n0,3\n")
    assert index.load().to_dict("records") == [{"sample_id": 0, "label": 3}]


@pytest.mark.parametrize("env", ["base", "cifar10"])
def test_every_file_the_pipelines_read_says_which_command_writes_it(env):
    import yaml

    conf = Path(__file__).parents[1] / "conf" / env
    entries = {}
    for catalog in sorted(conf.glob("catalog*.yml")):
        entries.update(yaml.safe_load(catalog.read_text()))
    typed = {name: e for name, e in entries.items() if not name.startswith("_") and "type" in e}
    readable = {"pgu.datasets.ModelDataset", "pgu.datasets.TensorBundleDataset"}
    readable.add("pgu.datasets.MadeByCSVDataset")
    files = {name for name, e in typed.items() if e["type"] in readable}
    assert "sample_index" in files and "original_model" in files
    assert {name for name in files if not typed[name].get("made_by")} == set()
    assert typed["sample_index"]["type"] == "pgu.datasets.MadeByCSVDataset"
