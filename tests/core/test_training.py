"""Training: determinism, learning, the learning-rate schedule and augmentation."""

import math

import numpy as np
import pytest
import torch

from pgu.core.checkpoint import model_spec, model_to_bytes
from pgu.core.data import SampleSet, normalisation_stats
from pgu.core.sources import load_source
from pgu.core.training import (
    TrainRecipe,
    accuracy_and_loss,
    apply_augmentation,
    augment,
    exponential_lr,
    fit_from_scratch,
)


@pytest.fixture(scope="module")
def digits() -> SampleSet:
    raw = load_source("digits")
    x = torch.from_numpy(raw.x[:400])
    mean, std = normalisation_stats(x)
    return SampleSet(x, torch.from_numpy(raw.y[:400]), torch.arange(400), mean, std, 10)


def test_same_seed_gives_byte_identical_weights_and_other_seed_does_not(digits):
    spec = model_spec("digits_cnn", digits.in_shape, 10)
    recipe = TrainRecipe(epochs=2, batch_size=32, seed=3)
    a, _ = fit_from_scratch(spec, digits, recipe)
    b, _ = fit_from_scratch(spec, digits, recipe)
    c, _ = fit_from_scratch(spec, digits, TrainRecipe(epochs=2, batch_size=32, seed=4))
    assert model_to_bytes(a) == model_to_bytes(b)
    assert model_to_bytes(a) != model_to_bytes(c)


def test_training_learns_and_records_history(digits):
    train, val = digits.take(torch.arange(300)), digits.take(torch.arange(300, 400))
    spec = model_spec("digits_cnn", digits.in_shape, 10)
    model, history = fit_from_scratch(spec, train, TrainRecipe(epochs=4, batch_size=32), val=val)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    acc, _ = accuracy_and_loss(model, val)
    assert acc > 0.8  # chance is 0.1


def test_exponential_lr_endpoints():
    assert exponential_lr(0.1, 0.001, 0, 10) == pytest.approx(0.1)
    assert exponential_lr(0.1, 0.001, 9, 10) == pytest.approx(0.001)
    assert exponential_lr(0.1, 0.001, 0, 1) == 0.1
    mid = exponential_lr(0.1, 0.001, 1, 3)
    assert mid == pytest.approx(math.sqrt(0.1 * 0.001))


def test_augment_keeps_shape_and_flip_is_a_mirror():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).view(2, 1, 3, 3)
    g = torch.Generator().manual_seed(0)
    out = augment(x, padding=0, flip=True, generator=g)
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2))
    cropped = augment(x, padding=1, flip=False, generator=g)
    assert cropped.shape == x.shape
    # every crop window is a shifted copy: its values are a subset of the padded image's
    padded_vals = set(np.append(x.numpy().ravel(), 0.0).tolist())
    assert set(cropped.numpy().ravel().tolist()) <= padded_vals


def test_crop_takes_each_samples_window_of_the_padded_image():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 5, 7, generator=g)
    pad = 2
    offsets = torch.randint(0, 2 * pad + 1, (6, 2), generator=g)  # (B, 2) = (dy, dx)
    out = apply_augmentation(x, (None, offsets), pad)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    for i, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(out[i], padded[i, :, dy : dy + 5, dx : dx + 7])


def test_recipe_rejects_unknown_parameters():
    with pytest.raises(ValueError, match="learning_rate"):
        TrainRecipe.from_params({"learning_rate": 0.1})


def test_empty_training_set_is_an_error(digits):
    spec = model_spec("digits_cnn", digits.in_shape, 10)
    with pytest.raises(ValueError, match="empty"):
        fit_from_scratch(spec, digits.take(torch.zeros(400, dtype=torch.bool)), TrainRecipe())


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("epochs", 0, "epochs must be >= 1, got 0"),
        ("batch_size", 0, "batch_size must be >= 1"),
        ("lr", 0.0, "lr must be > 0"),
        ("lr_end", -0.001, "lr_end must be > 0"),  # the decay would turn complex
        ("lr", float("nan"), "lr must be > 0"),
        ("crop_padding", -2, "crop_padding must be >= 0"),
        ("weight_decay", -1e-4, "weight_decay must be >= 0"),
    ],
)
def test_a_recipe_out_of_range_is_refused_naming_its_key(key, value, message):
    """Each of these failed deep in the loop (a complex or zero learning rate, an empty
    range) or was silently accepted (negative padding turned cropping off)."""
    with pytest.raises(ValueError, match=f"training recipe: {message}"):
        TrainRecipe.from_params({key: value})
