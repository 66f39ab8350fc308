"""Project settings (pgu.settings): how environments merge, and log lines without a terminal."""

import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kedro.config import OmegaConfigLoader

CONF = Path(__file__).parents[1] / "conf"

PRINT_COLUMNS = "import pgu.settings, os; print(os.environ.get('COLUMNS'))"


def _columns(env: dict, tty: bool = False) -> str:
    if not tty:
        out = subprocess.run(
            [sys.executable, "-c", PRINT_COLUMNS],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    leader, follower = pty.openpty()  # a terminal on stdin, stdout and stderr
    try:
        subprocess.run(
            [sys.executable, "-c", PRINT_COLUMNS],
            env=env,
            stdin=follower,
            stdout=follower,
            stderr=follower,
            check=True,
        )
        return os.read(leader, 1024).decode().strip()
    finally:
        os.close(leader)
        os.close(follower)


@pytest.fixture
def env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "COLUMNS"}


def test_without_a_terminal_log_lines_are_laid_out_160_wide(env: dict):
    assert _columns(env) == "160"


def test_a_user_s_columns_and_a_terminal_s_width_are_left_alone(env: dict):
    assert _columns({**env, "COLUMNS": "100"}) == "100"
    assert _columns(env, tty=True) == "None"  # rich asks the terminal


def test_an_environment_changes_only_the_parameters_it_names(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # importing settings here must not widen this process
    from pgu import settings

    shutil.copytree(CONF / "base", tmp_path / "base")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "parameters_data.yml").write_text(
        "data: {source: csv, options: {path: my.csv, label_column: y}}\n"
    )
    (mine / "parameters_train.yml").write_text("model: {name: mlp}\ntrain: {recipe: {epochs: 3}}\n")
    args = {**settings.CONFIG_LOADER_ARGS, "conf_source": str(tmp_path), "env": "mine"}
    base = OmegaConfigLoader(**{**args, "env": "base"})["parameters"]
    params = OmegaConfigLoader(**args, runtime_params={"train": {"device": "cuda"}})["parameters"]
    assert params["data"]["source"] == "csv"
    assert params["data"]["options"] == {"path": "my.csv", "label_column": "y"}
    assert params["data"]["root"] == base["data"]["root"]  # kept: base's, not dropped
    assert params["data"]["split"] == base["data"]["split"]
    assert params["model"] == {**base["model"], "name": "mlp"}
    assert params["train"]["recipe"] == {**base["train"]["recipe"], "epochs": 3}
    assert params["train"]["device"] == "cuda"  # --params on top of both
    assert params["train"]["exclude_sample_ids"] == base["train"]["exclude_sample_ids"]
