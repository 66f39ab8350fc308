"""Shared fixtures: throw-away copies of the Kedro project to run pipelines end to end."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
# Torch splits float reductions by its CPU thread count, which defaults to the machine's cores:
# the models the tests train (and any decision a test reads at a threshold, such as a guard)
# would then depend on the machine. The suite's expectations are those of 2 threads, CI's cores.
torch.set_num_threads(2)


class KedroProject:
    """A copy of this project's configuration in a folder of its own, with empty data layers."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, path: Path, with_requests: bool = False) -> KedroProject:
        """Lay out a project copy at ``path`` (the bundled requests only if asked)."""
        path.mkdir(parents=True, exist_ok=True)
        for name in ("pyproject.toml", ".telemetry"):
            shutil.copy(ROOT / name, path / name)
        shutil.copytree(ROOT / "conf", path / "conf", ignore=shutil.ignore_patterns("local"))
        (path / "conf" / "local").mkdir()
        (path / "src").mkdir()  # bootstrap wants it; pgu itself is imported from the install
        (path / "data" / "01_raw").mkdir(parents=True)  # tracked in a checkout (.gitkeep)
        if with_requests:
            shutil.copytree(
                ROOT / "data/01_raw/deletion_requests", path / "data/01_raw/deletion_requests"
            )
        return cls(path)

    def clone(self, path: Path) -> KedroProject:
        """A full copy (configuration and data) at ``path``."""
        shutil.copytree(self.path, path, symlinks=True)
        return KedroProject(path)

    def run(self, *pipelines: str, params: dict | None = None) -> dict:
        """Run the named pipelines in a fresh KedroSession from the project's root."""
        from kedro.framework.session import KedroSession
        from kedro.framework.startup import bootstrap_project

        cwd = os.getcwd()
        os.chdir(self.path)
        try:
            bootstrap_project(self.path)
            with KedroSession.create(project_path=self.path, runtime_params=params or {}) as s:
                return s.run(pipeline_names=list(pipelines))
        finally:
            os.chdir(cwd)

    def files(self, under: str = "data") -> dict[str, bytes]:
        """Every file under ``under`` with its bytes (to prove nothing changed)."""
        base = self.path / under
        return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()}


@pytest.fixture
def kedro_project(tmp_path: Path) -> KedroProject:
    """A runnable project copy with no data yet."""
    return KedroProject.create(tmp_path / "project")


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory) -> KedroProject:
    """A project with data, a briefly trained digits_cnn and its full-data statistics.

    Shared by the end-to-end tests (each test works on its own ``clone``).
    """
    project = KedroProject.create(tmp_path_factory.mktemp("trained") / "p")
    project.run("data", "train", "representation", params={"train": {"recipe": {"epochs": 6}}})
    return project


class HostReads(TorchDispatchMode):
    """Records the operators that make the host wait for a tensor's values (on CUDA, a device
    synchronisation, which a CUDA graph cannot capture): reading a scalar back, shapes that
    depend on values, boolean-mask indexing."""

    WAITING = {"_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "equal",
               "_unique2", "unique_dim", "unique_consecutive", "repeat_interleave"}  # fmt: skip
    INDEXING = {"index", "index_put", "index_put_", "_index_put_impl_"}

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        masks = [
            i for i in (args[1] if name in self.INDEXING and len(args) > 1 else [])
            if isinstance(i, torch.Tensor) and i.dtype == torch.bool
        ]  # fmt: skip
        if name in self.WAITING or masks:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))
