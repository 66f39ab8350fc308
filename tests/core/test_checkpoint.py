"""Safe storage: deterministic bytes, atomic writes, self-describing model files."""

import pytest
import torch
from safetensors.torch import save as st_save

from pgu.core.checkpoint import (
    CheckpointError,
    build_from_spec,
    load_tensors,
    model_from_bytes,
    model_hash,
    model_spec,
    model_to_bytes,
    save_tensors,
    sha256_file,
    tensors_from_bytes,
    tensors_to_bytes,
)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_from_spec(model_spec("digits_cnn", (1, 8, 8), 10))


def test_same_tensors_serialise_to_same_bytes_whatever_the_dict_order():
    a = {"w": torch.arange(6.0).view(2, 3), "b": torch.ones(2)}
    b = {"b": torch.ones(2), "w": torch.arange(6.0).view(2, 3)}
    meta1, meta2 = {"x": 1, "y": [1, 2]}, {"y": [1, 2], "x": 1}
    assert tensors_to_bytes(a, meta1) == tensors_to_bytes(b, meta2)


def test_save_load_round_trip_and_file_hash(tmp_path):
    path = tmp_path / "sub" / "t.safetensors"
    digest = save_tensors(path, {"r": torch.eye(3, dtype=torch.float64)}, {"layer": "fc"})
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["r"], torch.eye(3, dtype=torch.float64))
    assert meta == {"layer": "fc"}
    assert digest == sha256_file(path)
    assert [p.name for p in path.parent.iterdir()] == ["t.safetensors"]  # no temp files left


def test_model_round_trip_rebuilds_architecture_and_weights():
    model = _model()
    back = model_from_bytes(model_to_bytes(model))
    assert back.pgu_spec == model.pgu_spec
    for (k, v), (k2, v2) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    assert model_hash(back) == model_hash(model)
    assert model_hash(_model(1)) != model_hash(model)


def test_corrupt_or_foreign_files_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        model_from_bytes(b"\x00garbage" * 10)
    data = tensors_to_bytes({"w": torch.ones(2)})
    with pytest.raises(CheckpointError, match="not a pgu model file"):
        model_from_bytes(data)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_tensors(tmp_path / "missing.safetensors")
    truncated = model_to_bytes(_model())[:-100]
    with pytest.raises(CheckpointError):
        model_from_bytes(truncated)


def test_loaded_tensors_come_back_in_sorted_order():
    names = [f"layer{i}" for i in (7, 2, 9, 0, 5, 3, 8, 1)]
    data = tensors_to_bytes({n: torch.zeros(1) for n in names})
    for _ in range(5):  # the underlying order varies between processes, ours must not
        assert list(tensors_from_bytes(data)[0]) == sorted(names)


def test_hand_crafted_model_headers_give_clear_errors():
    """Each names the file, the problem and the fix, and none builds (or allocates) the model."""
    weights, spec = _model().state_dict(), model_spec("digits_cnn", (1, 8, 8), 10)

    def header(**change):
        return tensors_to_bytes(weights, {"kind": "model", "spec": {**spec, **change}})

    no_kwargs = {k: v for k, v in spec.items() if k != "kwargs"}
    cases = [
        (st_save(dict(weights), metadata={"pgu": "{not json"}), "'pgu' header entry"),
        (st_save(dict(weights), metadata={"pgu": "[1]"}), "is not a JSON object"),
        (header(name="nope"), "unknown model 'nope'"),
        (tensors_to_bytes(weights, {"kind": "model", "spec": no_kwargs}), "no 'kwargs' entry"),
        (header(kwargs={"width": 2}), "unknown options ['width']"),
        (header(in_shape=[1, 1e9, 1e9]), "'in_shape': [1, 1000000000.0, 1000000000.0]"),
        (header(in_shape=[1e30, 8, 8]), "'in_shape': [1e+30, 8, 8]"),
        (header(in_shape=[1, 1e5, 1e5]), "fc1.weight: [256, 512] stored, [256, 80000000000] exp"),
        (header(num_classes=11), "does not match architecture digits_cnn"),
    ]
    for data, message in cases:
        with pytest.raises(CheckpointError) as info:
            model_from_bytes(data, "m.safetensors")
        text = str(info.value)
        assert text.startswith("m.safetensors") and message in text, text
        assert "`dvc checkout`" in text and "\n" not in text, text
