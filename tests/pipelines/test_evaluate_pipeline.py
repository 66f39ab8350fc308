"""End to end: evaluate after unlearn writes a report per request; the notebook runs on it."""

import json
import re

import nbformat
import pandas as pd
import pytest
from conftest import ROOT
from nbclient import NotebookClient

from pgu.core.data import split_ids
from pgu.core.requests import file_request
from pgu.core.retention import purge_superseded

pytestmark = pytest.mark.slow
FAST = {
    "evaluate": {"finetune_recipe": {"epochs": 1}},
    "train": {"recipe": {"epochs": 6}},  # the gold standard follows the original's recipe
}


def test_evaluate_reports_every_request_and_the_notebook_shows_it(trained_project, tmp_path):
    project = trained_project.clone(tmp_path / "p")
    index = pd.read_csv(project.path / "data/02_intermediate/sample_index.csv")
    train = split_ids(index, "train")
    folder = project.path / "data/01_raw/deletion_requests"
    file_request(folder, sample_ids=train[::8].tolist(), note="random")
    file_request(folder, classes=[3], note="class 3")
    project.run("unlearn")
    project.run("evaluate", params=FAST)

    reports = project.path / "data/08_reporting/requests"
    for rid in ("req-0001", "req-0002"):
        ev = json.loads((reports / rid / "evaluation.json").read_text())
        models = ev["models"]
        assert list(models)[:3] == ["retrained", "original", "pgu"]
        assert set(models) >= {"ft", "ng", "rl", "no_projection"}
        assert models["retrained"]["forget_acc"] < models["original"]["forget_acc"] + 1e-9
        for name, row in models.items():
            if name != "retrained":
                assert 0.0 <= row["tow"] <= 1.0 and row["js_forget"] >= 0.0
        assert set(ev["verdicts"]["pgu"]) <= set(ev["tolerances"])
        report = (reports / rid / "report.md").read_text()
        assert "| retrained |" in report and "× retraining" in report
        # the cost section says how each baseline's run ended: FT's epochs, the loops' stops
        stops = ev["baseline_stops"]
        assert stops["ft"] == "1 epoch of fine-tuning on the retain set"
        for name in ("ng", "rl", "no_projection"):
            assert re.fullmatch(r"`[a-z_]+` after \d+ epochs?(, kept epoch \d+)?", stops[name])
            assert re.search(rf"^- {name}: [\d.]+ s = [\d.]+ × retraining \(`", report, re.M)
        assert f"× retraining ({stops['ft']})" in report
        assert (reports / rid / "mia.png").read_bytes()[:4] == b"\x89PNG"
        # The shadow-model attack (2 pairs by default) scores every model but the reference.
        shadow = ev["shadow_attack"]
        assert shadow["n_pairs"] == 2 and shadow["informative"] == (shadow["held_out_auc"] >= 0.55)
        for name, row in models.items():
            assert 0.0 <= row["shadow_member_rate"] <= 1.0
            if name != "retrained":
                assert row["d_shadow_auc"] == pytest.approx(abs(row["shadow_auc"] - 0.5))
        expected = {"within", "outside"} if shadow["informative"] else {"uninformative"}
        assert ev["verdicts"]["pgu"]["d_shadow_auc"] in expected
        assert "## Shadow-model attack" in report
        assert (reports / rid / "shadow.png").read_bytes()[:4] == b"\x89PNG"
    # Class removal: PGU removes class 3 from test predictions, the retrained model never saw it.
    classes = json.loads((reports / "req-0002/evaluation.json").read_text())["models"]
    assert classes["pgu"]["test_forget_class_acc"] <= 0.1
    assert classes["retrained"]["test_forget_class_acc"] == 0.0
    # Models that never saw class 3 answer unlike those that did: the attack tells them apart
    # on shadow pairs it was not fitted on, and tells the original model from retrained.
    attack = json.loads((reports / "req-0002/evaluation.json").read_text())["shadow_attack"]
    assert attack["informative"] and attack["held_out_auc"] > 0.9
    assert classes["original"]["shadow_auc"] > 0.9
    assert classes["original"]["shadow_member_rate"] > classes["retrained"]["shadow_member_rate"]
    # The gold standard is cached: a second evaluation retrains nothing and gives the same numbers.
    # req-0002's shadows "with" its forget set are req-0001's "without": copied, not retrained
    shadows = project.path / "data/06_models/retrained"
    for s in (0, 1):
        copied = shadows / f"req-0002/shadow/{s}-with/model.safetensors"
        assert (
            copied.read_bytes()
            == (shadows / f"req-0001/shadow/{s}-without/model.safetensors").read_bytes()
        )
        assert not (reports / f"req-0002/shadow_time/{s}-with.json").exists()
        assert (reports / f"req-0002/shadow_time/{s}-without.json").exists()
    cached = project.path / "data/06_models/retrained/req-0001"
    kept = [cached / "model.safetensors", cached / "shadow/1-without/model.safetensors"]
    stamps = [path.stat().st_mtime_ns for path in kept]
    project.run("evaluate", params=FAST | {"evaluate": {"request_id": "req-0001", "baselines": []}})
    assert [path.stat().st_mtime_ns for path in kept] == stamps

    # a replay of req-0001 (what `make repro` does in a fresh clone): the ledger gains a row
    # whose input is the original, after req-0002's; the lineage still chains
    project.run("unlearn", params={"unlearn": {"request_id": "req-0001"}})
    shutil_nb = project.path / "notebooks"
    shutil_nb.mkdir()
    nb = nbformat.read(ROOT / "notebooks/walkthrough.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(shutil_nb)}}).execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "3 rows for 2 requests, lineage chained: True" in outputs
    assert "served   test accuracy" in outputs

    # The purge removes every evaluation model that saw a forgotten sample, and only those.
    models = project.path / "data/06_models"
    purge_superseded(models / "states", project.path / "data/08_reporting/ledger.csv", tmp_path)
    left = sorted(
        str(p.relative_to(models / "retrained")) for p in models.rglob("retrained/**/*.safetensors")
    )
    assert left == [
        "req-0002/model.safetensors",
        "req-0002/shadow/0-without/model.safetensors",
        "req-0002/shadow/1-without/model.safetensors",
    ]
