"""dvc.yaml lists, for every stage, the code and the parameters its Kedro pipeline reads.

A stage whose ``deps`` miss a module it runs, or whose ``params`` miss a parameter block a node
reads, is not rerun by ``dvc repro`` when that changes: its outputs then claim a lineage they
do not have. The code a stage runs is taken as the import closure (within ``pgu``) of its
pipeline's modules and of the custom Kedro datasets it reads or writes.
"""

from __future__ import annotations

import ast
import importlib
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

SRC = ROOT / "src"


def _stages() -> dict[str, dict]:
    """Every stage of dvc.yaml with its cmd, deps and params (``foreach`` stages by ``do``)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def _kedro_target(cmd: str) -> tuple[str, str | None]:
    """(pipeline, tag or None) of a ``kedro run --pipelines NAME [--tags T]`` command."""
    args = shlex.split(cmd)
    assert args[:2] == ["kedro", "run"], cmd
    opts = dict(zip(args[2::2], args[3::2], strict=False))
    return opts["--pipelines"], opts.get("--tags")


def _module_file(module: str) -> Path | None:
    base = SRC / Path(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def _imports(path: Path) -> set[str]:
    """Modules (within pgu) that ``path`` names in its imports (``from a.b import c``: a.b
    and, if it is a module, a.b.c). Parent packages are not followed: ours only re-export."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {name for name in found if name.split(".")[0] == "pgu"}


def _only_docstring(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) for s in body)


def _closure(files: set[Path]) -> set[Path]:
    seen: set[Path] = set()
    todo = list(files)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(f for m in _imports(path) if (f := _module_file(m)) and f not in seen)
    return {p for p in seen if not _only_docstring(p)}


def _pipeline(name: str, tag: str | None):
    pipeline = importlib.import_module(f"pgu.pipelines.{name}.pipeline").create_pipeline()
    return pipeline.only_nodes_with_tags(tag) if tag else pipeline


def _catalog_modules(datasets: set[str]) -> set[Path]:
    """Source files that define the project's own dataset classes behind ``datasets``."""
    files = set()
    for path in (ROOT / "conf" / "base").glob("catalog*.yml"):
        for name, entry in (yaml.safe_load(path.read_text()) or {}).items():
            kind = entry.get("type", "") if isinstance(entry, dict) else ""
            if name in datasets and kind.startswith("pgu."):
                package, cls = kind.rsplit(".", 1)
                defined_in = getattr(importlib.import_module(package), cls).__module__
                files.add(_module_file(defined_in))
    return files


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


# Modules a stage's nodes.py imports for nodes the stage does not run. `poison` runs the first
# half of the depoison pipeline (`--tags poison`); its nodes.py also holds the de-poisoning half.
NOT_RUN = {
    "poison": {
        "src/pgu/core/cgs.py",
        "src/pgu/core/depoisoning.py",
        "src/pgu/core/losses.py",
        "src/pgu/core/projection.py",
        "src/pgu/core/trust_region.py",
    }
}

KEDRO_STAGES = sorted(n for n, s in _stages().items() if s["cmd"].startswith("kedro run"))


@pytest.mark.parametrize("stage", KEDRO_STAGES)
def test_a_stage_depends_on_every_module_its_pipeline_runs(stage):
    spec = _stages()[stage]
    pipeline = _pipeline(*_kedro_target(spec["cmd"]))
    name = _kedro_target(spec["cmd"])[0]
    code = set((SRC / "pgu" / "pipelines" / name).glob("*.py"))
    code |= _catalog_modules(pipeline.datasets())
    missing = sorted(
        str(p.relative_to(ROOT)) for p in _closure(code) if not _covered(p, spec["deps"])
    )
    missing = [m for m in missing if m not in NOT_RUN.get(stage, set())]
    assert not missing, f"dvc.yaml stage {stage!r} runs but does not depend on {missing}"


@pytest.mark.parametrize("stage", KEDRO_STAGES)
def test_a_stage_lists_every_parameter_block_its_nodes_read(stage):
    spec = _stages()[stage]
    pipeline = _pipeline(*_kedro_target(spec["cmd"]))
    listed = [key for entry in spec.get("params", []) for keys in entry.values() for key in keys]
    read = sorted(i.removeprefix("params:") for i in pipeline.inputs() if i.startswith("params:"))
    missing = [
        p
        for p in read
        if not any(k == p or k.startswith(p + ".") or p.startswith(k + ".") for k in listed)
    ]
    assert not missing, f"dvc.yaml stage {stage!r} reads params {missing} without listing them"


def test_the_closure_sees_through_imports():
    """The check itself: the unlearn pipeline reaches the loss module through the loop."""
    files = _closure(set((SRC / "pgu" / "pipelines" / "unlearn").glob("*.py")))
    assert SRC / "pgu" / "core" / "losses.py" in files
    assert SRC / "pgu" / "core" / "sources.py" not in files


def test_a_purge_s_tombstones_of_states_are_not_ignored_by_git(tmp_path):
    """A clone must know what was purged on purpose: the tombstones of state files are
    committed (git does not ignore them), in every environment's states folder."""
    import shutil
    import subprocess

    import pytest

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    for path in (
        "data/06_models/states/req-0001/model.safetensors.purged",
        "data/06_models/cifar10/states/original/retain_stats.safetensors.purged",
        "data/06_models/states/req-0001/model.safetensors",  # the state itself: DVC's
    ):
        ignored = (
            subprocess.run(
                ["git", "check-ignore", "--no-index", "-q", path], cwd=ROOT, check=False
            ).returncode
            == 0
        )
        assert ignored == (not path.endswith(".purged")), path
