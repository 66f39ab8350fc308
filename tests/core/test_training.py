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
    draw_augmentation,
    draw_epoch_augmentation,
    exponential_lr,
    fit_from_scratch,
    resident,
    train_model,
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


@pytest.mark.parametrize("flip, padding", [(True, 2), (True, 0), (False, 3), (False, 0)])
def test_an_epochs_draws_at_once_are_the_batch_by_batch_draws(flip, padding):
    """Drawing a whole epoch's augmentation up front (one copy to a GPU) consumes the generator
    as drawing batch by batch did, a short last batch included, so training keeps its bytes."""
    n, batch = 23, 5
    at_once = draw_epoch_augmentation(n, batch, padding, flip, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    each = [draw_augmentation(min(batch, n - s), padding, flip, g) for s in range(0, n, batch)]
    for i, wanted in enumerate((flip, padding > 0)):
        if not wanted:
            assert at_once[i] is None
            continue
        assert at_once[i].shape[0] == n
        assert torch.equal(at_once[i], torch.cat([e[i] for e in each]))
    # and the generator stands where batch-by-batch drawing left it
    g2 = torch.Generator().manual_seed(7)
    draw_epoch_augmentation(n, batch, padding, flip, g2)
    assert torch.equal(torch.rand(3, generator=g2), torch.rand(3, generator=g))


def test_training_data_stays_where_it_is_off_a_gpu(digits):
    assert resident(digits, "cpu") is digits


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_on_a_gpu_training_data_is_copied_there_once_and_training_still_learns():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (300, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = (x.float().mean((1, 2, 3)) > 127).long()  # a learnable rule
    data = SampleSet(x, y, torch.arange(300), torch.full((3,), 0.5), torch.full((3,), 0.25), 2)
    on_gpu = resident(data, "cuda")
    assert on_gpu.x.is_cuda and on_gpu.y.is_cuda and not on_gpu.sample_id.is_cuda
    assert resident(on_gpu, "cuda") is on_gpu  # not copied again
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2))
    recipe = TrainRecipe(epochs=3, batch_size=32, lr=0.05, crop_padding=1, horizontal_flip=True)
    history = train_model(model, data, recipe, device="cuda")
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert not data.x.is_cuda  # the caller's set is untouched


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
