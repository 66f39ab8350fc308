"""DVC replays the data and train stages in a fresh clone; a second replay does nothing."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


def _run(args, cwd, env):
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_dvc_repro_in_a_fresh_clone_is_reproducible_and_idempotent(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "KEDRO_DISABLE_TELEMETRY": "1",
    }
    _run(["git", "clone", "-q", str(ROOT), str(clone)], tmp_path, env)
    dvc = str(Path(sys.executable).with_name("dvc"))
    out = _run([dvc, "repro", "train"], clone, env)
    assert "Running stage 'data'" in out and "Running stage 'train'" in out
    again = _run([dvc, "repro", "train"], clone, env)
    assert "Running stage" not in again
    status = _run([dvc, "status", "train"], clone, env)
    assert "up to date" in status
