"""Shared fixtures: a throw-away copy of the Kedro project to run pipelines end to end."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")


class KedroProject:
    """A copy of this project's configuration in a temporary folder, with empty data layers."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def run(self, *pipelines: str, params: dict | None = None) -> dict:
        """Run the named pipelines in a fresh KedroSession; returns the run's free outputs."""
        from kedro.framework.session import KedroSession
        from kedro.framework.startup import bootstrap_project

        bootstrap_project(self.path)
        with KedroSession.create(project_path=self.path, runtime_params=params or {}) as session:
            return session.run(pipeline_names=list(pipelines))


@pytest.fixture
def kedro_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KedroProject:
    """A runnable project copy; the working directory is its root for the test's duration."""
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "src").mkdir()  # bootstrap wants it; pgu itself is imported from the install
    raw = ROOT / "data" / "01_raw" / "deletion_requests"
    if raw.is_dir():
        shutil.copytree(raw, tmp_path / "data" / "01_raw" / "deletion_requests")
    monkeypatch.chdir(tmp_path)
    return KedroProject(tmp_path)
