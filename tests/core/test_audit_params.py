"""The evaluate pipeline checks its parameters before it trains anything."""

import pytest

from pgu.core.audit import check_baseline_params
from pgu.pipelines.evaluate.nodes import evaluate_requests


def test_known_baselines_pass_in_their_order():
    params = {"baselines": ["no_projection", "ft"], "finetune_recipe": {"epochs": 1}}
    assert check_baseline_params(params) == ["no_projection", "ft"]
    assert check_baseline_params({"baselines": None}) == []


@pytest.mark.parametrize(
    "params, match",
    [
        ({"baselines": ["xx", "ng"]}, r"unknown baselines \['xx'\]; valid: \['ft'"),
        ({"baselines": "ng"}, "must be a list of names"),
        ({"baselines": ["ng", "ng"]}, "lists a baseline twice"),
        ({"baselines": ["ft"], "finetune_recipe": {"epoch": 3}}, "finetune_recipe.*unknown"),
    ],
)
def test_bad_baselines_name_what_is_wrong(params, match):
    with pytest.raises(ValueError, match=match):
        check_baseline_params(params)


def test_the_node_refuses_an_unknown_baseline_before_reading_anything():
    # no workspace, data or model at all: the check must come first, before the gold standard
    # (a whole training) is trained and cached
    with pytest.raises(ValueError, match="unknown baselines"):
        evaluate_requests(None, None, None, {}, {}, {"baselines": ["xx"], "n_shadow": 0})


def _tiny_data():
    import numpy as np
    import pandas as pd
    import torch

    from pgu.core.data import SampleSet

    g = torch.Generator().manual_seed(0)
    n = 48
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long()
    data = SampleSet(x, y, torch.arange(n), torch.zeros(4), torch.ones(4), 2)
    index = pd.DataFrame({"sample_id": np.arange(n), "split": ["train"] * 40 + ["val"] * 8})
    return data, index


def test_a_cached_retraining_is_reused_only_for_the_same_original(tmp_path):
    """The gold standard's cache key holds the original's hash (lineage): the same lineage
    reads the cache, another (data or code changed since) trains again, and the key file is
    rewritten only after the new model."""
    import numpy as np

    from pgu.core.audit import gold_standard
    from pgu.core.checkpoint import model_hash, model_spec
    from pgu.core.training import TrainRecipe

    data, index = _tiny_data()
    spec = model_spec("mlp", (4,), 2, hidden=[8])
    recipe = TrainRecipe(epochs=1, batch_size=16)
    args = (np.array([0, 1]), data, index, spec, recipe, "cpu")
    first, seconds = gold_standard(tmp_path / "c", tmp_path / "t.json", *args, lineage="a" * 64)
    assert seconds > 0
    again, cached = gold_standard(tmp_path / "c", tmp_path / "t.json", *args, lineage="a" * 64)
    assert model_hash(again) == model_hash(first) and cached == seconds  # read, not trained
    other, retrained = gold_standard(tmp_path / "c", tmp_path / "u.json", *args, lineage="b" * 64)
    assert retrained > 0 and retrained != seconds  # trained again (same bytes: same data here)
    assert model_hash(other) == model_hash(first)


def test_a_damaged_cached_retraining_is_trained_again_not_used(tmp_path, caplog):
    """The cache records its model's sha256: bytes that no longer hash to it (garbled in place,
    or another model copied over) are trained again, and the record of a cache from before
    hashes were kept is completed on first read."""
    import json
    import logging

    import numpy as np

    from pgu.core.audit import gold_standard
    from pgu.core.checkpoint import model_hash, model_spec
    from pgu.core.training import TrainRecipe

    data, index = _tiny_data()
    spec = model_spec("mlp", (4,), 2, hidden=[8])
    args = (np.array([0, 1]), data, index, spec, TrainRecipe(epochs=1, batch_size=16), "cpu")
    cache, timing = tmp_path / "c", tmp_path / "t.json"
    first, seconds = gold_standard(cache, timing, *args, lineage="a" * 64)
    good = (cache / "model.safetensors").read_bytes()
    info = json.loads((cache / "gold.json").read_text())
    assert set(info) == {"key", "sha256"}
    garbled = bytearray(good)
    garbled[len(good) // 2 : len(good) // 2 + 64] = bytes(b ^ 0x5A for b in garbled[-64:])
    (cache / "model.safetensors").write_bytes(bytes(garbled))
    caplog.set_level(logging.WARNING, logger="pgu")
    again, retrained = gold_standard(cache, timing, *args, lineage="a" * 64)
    assert "is not the model" in caplog.text and retrained > 0 and retrained != seconds
    assert model_hash(again) == model_hash(first)
    assert (cache / "model.safetensors").read_bytes() == good  # the damaged file replaced
    (cache / "gold.json").write_text(json.dumps({"key": info["key"]}))  # an older cache's record
    _, cached = gold_standard(cache, timing, *args, lineage="a" * 64)
    assert cached == retrained  # read, not trained, and its record completed
    assert json.loads((cache / "gold.json").read_text()) == info


def test_fine_tuning_does_not_depend_on_the_global_generator():
    """FT's dropout draws are seeded from its recipe: whatever ran before (a gold standard
    trained, or read from its cache) leaves the same result, and the caller's generator as
    it was."""
    import torch
    from torch import nn

    from pgu.core.baselines import BaselineContext, run_baseline
    from pgu.core.training import TrainRecipe
    from pgu.core.unlearning import UnlearnConfig

    data, _ = _tiny_data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2))
    ctx = BaselineContext(
        retain=data,
        forget=data.take(torch.arange(4)),
        val=data.take(torch.arange(40, 48)),
        config=UnlearnConfig(),
        forget_classes=None,
        device="cpu",
        finetune_recipe=TrainRecipe(epochs=2, batch_size=16, seed=3),
        original=None,
    )
    outs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        state = torch.get_rng_state()
        outs.append(run_baseline("ft", model, ctx).model.state_dict())
        assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_a_purged_retraining_is_not_trained_again(tmp_path):
    """`pgu-admin purge` deletes evaluation models trained on removed samples and leaves a
    tombstone: the audit refuses to train one again rather than rebuild what was purged."""
    import numpy as np
    import pytest

    from pgu.core.audit import gold_standard
    from pgu.core.checkpoint import model_spec
    from pgu.core.requests import RequestError
    from pgu.core.training import TrainRecipe

    data, index = _tiny_data()
    spec = model_spec("mlp", (4,), 2, hidden=[8])
    args = (np.array([0, 1]), data, index, spec, TrainRecipe(epochs=1, batch_size=16), "cpu")
    cache = tmp_path / "shadow" / "0-with"
    cache.mkdir(parents=True)
    (cache / "model.safetensors.purged").write_text("deleted by pgu-admin purge\n")
    with pytest.raises(RequestError, match="deleted by `pgu-admin purge`.*delete .*purged"):
        gold_standard(cache, tmp_path / "t.json", *args, label="shadow 0 (with)")
    assert not (cache / "model.safetensors").exists()
