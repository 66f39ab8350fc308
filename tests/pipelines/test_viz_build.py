"""Kedro-Viz builds a static site that shows every pipeline of the project."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PIPELINES = {
    "__default__",
    "data",
    "train",
    "representation",
    "cgs",
    "unlearn",
    "evaluate",
    "depoison",
}


@pytest.mark.slow
def test_kedro_viz_build_lists_every_pipeline(kedro_project):
    kedro = Path(sys.executable).with_name("kedro")
    env = os.environ | {"KEDRO_DISABLE_TELEMETRY": "1"}
    result = subprocess.run(
        [str(kedro), "viz", "build"],
        cwd=kedro_project.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    main = json.loads((kedro_project.path / "build/api/main").read_text())
    assert {p["id"] for p in main["pipelines"]} == PIPELINES
    for pipeline, node in (("unlearn", "process_requests"), ("evaluate", "evaluate_requests")):
        view = json.loads((kedro_project.path / "build/api/pipelines" / pipeline).read_text())
        assert node in {n["name"] for n in view["nodes"]}
