"""What a request's report.md and plots tell the reader (pgu.core.audit, pgu.core.plots)."""

import math

import pytest
import torch
from torch import nn

from pgu.core import audit, plots
from pgu.core.audit import GOLD, _report, named_classes

SAME, OTHER = "a" * 64, "b" * 64


def _ledger_row(output_sha: str = OTHER, stop: str = "target_reached") -> dict:
    return {
        "request_sha256": "r",
        "ids_sha256": "i",
        "input_state": "original",
        "input_model_sha256": SAME,
        "output_model_sha256": output_sha,
        "input_stats_sha256": "s",
        "output_stats_sha256": "t",
        "bases_sha256": "u",
        "gamma": 0.95,
        "epochs_run": 0 if output_sha == SAME else 2,
        "stop_reason": stop,
    }


def _summary(kind: str = "samples", classes: tuple = (), unchanged: tuple = ()) -> dict:
    row = {"retain_acc": 0.99, "forget_acc": 0.5, "test_acc": 0.9, "tow": 0.95}
    if classes:
        row.update(test_forget_class_acc=0.012, test_other_acc=0.987)
    return {
        "request_id": "req-0001",
        "kind": kind,
        "n_forget": 40,
        "n_retain": 400,
        "classes": list(classes),
        "models": {GOLD: dict(row), "original": dict(row), "pgu": dict(row), "ng": dict(row)},
        "verdicts": {"pgu": {}},
        "tolerances": {},
        "unchanged": list(unchanged),
    }


SECONDS = {GOLD: 10.0, "pgu": 1.0, "ng": 0.5}


def test_a_request_that_changed_nothing_says_so():
    report = _report(_summary(unchanged=["pgu"]), _ledger_row(SAME, "target_at_start"), SECONDS)
    assert (
        "**PGU left the model unchanged: nothing was unlearned (stop reason `target_at_start`).**"
    ) in report
    assert "| pgu (unchanged) |" in report
    assert "(unchanged): the model returned its start model as it was" in report

    changed = _report(_summary(), _ledger_row(OTHER), SECONDS)
    assert "unchanged" not in changed and "| pgu |" in changed


def test_a_depoisoning_report_speaks_of_de_poisoning():
    report = _report(
        _summary("depoison", unchanged=["pgu"]), _ledger_row(SAME, "no_improvement"), SECONDS
    )
    assert "nothing was de-poisoned (stop reason `no_improvement`)" in report
    assert "- samples de-poisoned (wrong labels): **40**" in report
    assert "samples forgotten" not in report and "unlearned (stop" not in report

    plain = _report(_summary(), _ledger_row(), SECONDS)
    assert "- samples forgotten: **40**" in plain and "de-poison" not in plain


def test_a_class_report_shows_test_accuracy_on_the_removed_and_other_classes():
    report = _report(_summary("classes", classes=(3,)), _ledger_row(), SECONDS)
    header = next(line for line in report.splitlines() if line.startswith("| model |"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    at = cells.index("test acc %")
    assert cells[at + 1 : at + 3] == ["test acc removed classes %", "test acc other classes %"]
    pgu = next(line for line in report.splitlines() if line.startswith("| pgu |"))
    assert [c.strip() for c in pgu.strip("|").split("|")][at + 1 : at + 3] == ["1.2", "98.7"]

    samples = _report(_summary(), _ledger_row(), SECONDS)
    assert "removed classes" not in samples
    assert "- kind: **classes** (classes 3)\n" in report
    mixed = _report(
        {**_summary("classes", classes=(3,)), "n_named_ids": 20}, _ledger_row(), SECONDS
    )
    assert "- kind: **classes** (classes 3 and 20 named sample ids)" in mixed
    # a class's name stands beside its label where the data named it, and only then
    assert named_classes((3, 5), [str(i) for i in range(10)]) == {}  # digits
    assert named_classes((0, 3), ["1", "2", "3", "4"]) == {"0": "1", "3": "4"}  # a CSV's 1..4
    assert named_classes((3,), ["airplane", "automobile", "bird", "cat"]) == {"3": "cat"}
    named = {**_summary("classes", classes=(3, 5)), "class_names": {"3": "cat"}}
    assert "- kind: **classes** (classes 3 (cat), 5)\n" in _report(named, _ledger_row(), SECONDS)


def test_a_weak_retrained_reference_is_called_out_above_the_verdicts():
    summary = _summary()
    summary["models"][GOLD]["test_acc"] = 0.667  # the original's 0.9: not a reference to match
    report = _report(summary, _ledger_row(), SECONDS)
    assert (
        "**The retrained reference is weak: test accuracy 66.7% against the original's 90.0%"
        in report
    )
    assert report.index("reference is weak") < report.index("## Verdicts")
    summary["models"][GOLD]["test_acc"] = 0.86  # within 5 points: an ordinary reference
    assert "reference is weak" not in _report(summary, _ledger_row(), SECONDS)
    # class removal: the removed classes are always wrong afterwards; judge the others
    classes = _summary("classes", classes=(3,))
    classes["models"][GOLD]["test_acc"] = 0.80
    assert "reference is weak" not in _report(classes, _ledger_row(), SECONDS)
    classes["models"][GOLD]["test_other_acc"] = 0.90  # the original's 0.987
    assert "test accuracy on the other classes 90.0%" in _report(classes, _ledger_row(), SECONDS)
    # a sample request after a class removal: the removed class's test samples, which only the
    # original gets right, do not make the reference look weak
    later = _summary()
    later["models"][GOLD].update(test_acc=0.885, test_other_acc=0.985)
    later["models"]["original"].update(test_acc=0.989, test_other_acc=0.989)
    assert "reference is weak" not in _report(later, _ledger_row(), SECONDS)
    header = next(
        line for line in _report(later, _ledger_row(), SECONDS).splitlines() if "|" in line
    )
    assert "| test acc % | test acc without removed classes % |" in header  # the figure quoted
    assert "without removed classes" not in _report(_summary(), _ledger_row(), SECONDS)
    later["models"][GOLD]["test_other_acc"] = 0.90
    assert "test accuracy without the classes earlier requests removed 90.0%" in _report(
        later, _ledger_row(), SECONDS
    )


def test_a_baseline_that_returned_its_start_model_is_marked():
    report = _report(_summary(unchanged=["ng"]), _ledger_row(), SECONDS)
    assert "| ng (unchanged) |" in report and "| pgu |" in report
    assert "PGU left the model unchanged" not in report


def test_same_weights_compares_every_tensor_bit_for_bit():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    b = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    b.load_state_dict(a.state_dict())
    assert audit._same_weights(a, b)
    with torch.no_grad():
        b[0].weight[0, 0] += 1e-6
    assert not audit._same_weights(a, b)
    b.load_state_dict(a.state_dict())
    b[1].running_mean += 1.0  # a buffer counts too
    assert not audit._same_weights(a, b)


def test_the_shadow_section_says_what_a_missing_training_time_means():
    summary = _summary()
    summary["shadow_attack"] = {
        "n_pairs": 2,
        "held_out_auc": 0.9,
        "min_power": 0.55,
        "informative": True,
    }
    for row in summary["models"].values():
        row.update(shadow_member_rate=0.5, shadow_auc=0.5)
    report = _report(summary, _ledger_row(), SECONDS, shadow_seconds=math.nan)
    assert "the same models as another request's (copied from its cache" in report
    assert (
        "the shadow attack's cost (training its shadow models) is counted where they were "
        in report
    )
    timed = _report(summary, _ledger_row(), SECONDS, shadow_seconds=12.0)
    assert "Training the 4 shadow models took 12.00 s." in timed


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_method_bars_can_draw_an_auc_on_the_report_s_0_to_1_scale():
    fig = plots.method_bars({"pgu": 1.0, "ng": 0.066}, "AUC", "req", 0.5, percent=False)
    ax = fig.axes[0]
    assert _texts(ax) == ["1.000", "0.066"]
    assert [p.get_height() for p in ax.patches] == [1.0, 0.066]
    assert ax.get_lines()[0].get_ydata()[0] == 0.5
    plots.png_bytes(fig)

    fig = plots.method_bars({"pgu": 0.25}, "member %")  # the default stays percent
    assert _texts(fig.axes[0]) == ["25.0"]
    plots.png_bytes(fig)


def test_the_unlearning_curve_names_the_objective_not_the_forget_loss():
    history = [
        {"epoch": 0, "loss": math.nan, "forget_acc": 1.0, "val_acc": 0.9, "forget_loss": 0.1},
        {"epoch": 1, "loss": -0.5, "forget_acc": 0.6, "val_acc": 0.9, "forget_loss": 0.8},
    ]
    fig = plots.unlearning_curve(history, "req-0001")
    right = fig.axes[1]
    assert right.get_title() == "unlearning objective (mean over the forget set)"
    assert "loss on the forget set" not in [ax.get_title() for ax in fig.axes]
    assert list(right.get_lines()[0].get_ydata())[1] == -0.5
    plots.png_bytes(fig)


def test_the_unlearning_curve_draws_undone_tries_off_the_path_and_marks_the_returned_epoch():
    def rec(epoch: int, acc: float, accepted: bool = True) -> dict:
        return {
            "epoch": epoch,
            "loss": -acc,
            "forget_acc": acc,
            "val_acc": 0.9,
            "accepted": accepted,
        }

    # epoch 1 overshot twice before its third try held; epoch 2 was kept; epoch 3 jumped the band
    history = [rec(0, 1.0), rec(1, 0.1, False), rec(1, 0.4, False), rec(1, 0.8)]
    history += [rec(2, 0.7), rec(3, 0.2)]
    fig = plots.unlearning_curve(history, "req-0001", kept_epoch=2)
    left, right = fig.axes[:2]
    forget = next(line for line in left.get_lines() if line.get_label() == "forget set")
    assert list(forget.get_xdata()) == [0, 1, 2, 3]  # one point per epoch: no zigzag
    assert list(forget.get_ydata()) == [100.0, 80.0, 70.0, 20.0]
    crosses = [
        line for line in left.get_lines() if line.get_marker() == "x" and len(line.get_xdata())
    ]
    assert [list(c.get_xdata()) for c in crosses] == [[1, 1], [1, 1]]  # forget set, val
    assert list(crosses[0].get_ydata()) == [10.0, 40.0]
    assert crosses[0].get_color() == forget.get_color()
    for ax in (left, right):  # the returned epoch on both panels
        assert any(list(line.get_xdata()) == [2, 2] for line in ax.get_lines())
    labels = left.get_legend_handles_labels()[1]
    assert "undone try" in labels and "returned: epoch 2" in labels
    assert list(right.get_lines()[0].get_xdata()) == [0, 1, 2, 3]
    plots.png_bytes(fig)

    plain = plots.unlearning_curve(history[:1])  # no tries undone, no epoch given: neither mark
    assert plain.axes[0].get_legend_handles_labels()[1] == ["forget set", "val"]

    # as metrics.json gives it back: epoch 0's objective is null (strict JSON), drawn as a gap
    from_json = plots.unlearning_curve([{**history[0], "loss": None}, history[3]])
    assert math.isnan(from_json.axes[1].get_lines()[0].get_ydata()[0])


def _layer(name: str, d: int, k: int) -> dict:
    return {"layer": name, "d": d, "k": k, "gamma": 0.95, "sigma": [2.0**-i for i in range(d)]}


def test_spectra_keep_the_model_s_layer_order_and_start_every_axis_at_1():
    layers = [  # as statistics read back from a file give them: alphabetical
        _layer("classifier.fc1", 512, 390),
        _layer("features.conv1", 9, 7),
        _layer("features.conv2", 288, 222),
    ]
    order = ["features.conv1", "features.conv2", "classifier.fc1"]
    fig = plots.spectra(layers, order=order)
    shown = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().split(" ")[0] for ax in shown] == order
    assert [ax.get_xlim() for ax in shown] == [(1, 9), (1, 288), (1, 512)]
    plots.png_bytes(fig)

    # without an order the received order is kept; unnamed layers go last
    same = plots.spectra(layers)
    assert [ax.get_title().split(" ")[0] for ax in same.axes[:3]] == [x["layer"] for x in layers]
    plots.png_bytes(same)
    partial = plots.spectra(layers, order=["features.conv2"])
    assert [ax.get_title().split(" ")[0] for ax in partial.axes[:3]] == [
        "features.conv2",
        "classifier.fc1",
        "features.conv1",
    ]
    plots.png_bytes(partial)


@pytest.mark.parametrize("d", [0, 1])
def test_spectra_of_a_tiny_layer_still_draw(d):
    plots.png_bytes(plots.spectra([_layer("fc", d, d)]))


def test_the_gold_standard_is_trained_with_the_original_s_recorded_recipe(caplog):
    from dataclasses import replace

    from pgu.core.checkpoint import build_from_spec, model_from_bytes, model_spec, model_to_bytes
    from pgu.core.training import TrainRecipe

    then = TrainRecipe(epochs=2, lr=0.01)
    original = build_from_spec(model_spec("mlp", (5,), 3))
    original.pgu_recipe = dict(then.__dict__)  # as fit_from_scratch leaves it
    original = model_from_bytes(model_to_bytes(original))  # and its file keeps it
    now = replace(then, epochs=5)  # parameters_train.yml edited since
    with caplog.at_level("WARNING"):
        assert audit.trained_with(original, now) == then
    assert "epochs 5 now, 2 then" in caplog.text
    unrecorded = build_from_spec(model_spec("mlp", (5,), 3))  # a file from before recipes
    assert audit.trained_with(unrecorded, now) == now
    original.pgu_recipe = {**then.__dict__, "epochs": 0}  # not a valid recipe: the configured
    assert audit.trained_with(original, now) == now
