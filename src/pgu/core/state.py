"""The state store: one folder per model state, committed atomically.

``<root>/original/`` holds the trained model and the full-data representation matrices;
``<root>/<request_id>/`` holds the model after that request, the retain statistics it leaves
behind for the next request, and the bases it used::

    model.safetensors         the served model
    retain_stats.safetensors  R_retain per layer (+ the hash of the model that produced R_full)
    bases.safetensors         CGS bases used for this request (request states only)

A request's folder is first written under a temporary name and then renamed into place, so a
crash leaves either the previous state or the complete new one, never a mixture.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from pgu.core.checkpoint import (
    RESTORE_HINT,
    UMASK,
    CheckpointError,
    TensorBundle,
    file_meta,
    load_tensors,
    model_from_bytes,
)
from pgu.core.requests import ORIGINAL, RequestError

MODEL = "model.safetensors"
RETAIN_STATS = "retain_stats.safetensors"
BASES = "bases.safetensors"
# `pgu-admin purge` leaves ``<file>.purged`` where it deleted a state's file
PURGED_SUFFIX = ".purged"
# the temporary folders of `StateStore.commit` (tempfile.mkdtemp adds 8 characters)
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>new|old)\.[a-z0-9_]{8}$")


def tombstone(path: Path) -> Path:
    """The file `pgu-admin purge` leaves in place of ``path``."""
    return path.with_name(path.name + PURGED_SUFFIX)


def _without_hint(exc: Exception) -> str:
    """A CheckpointError's message without its generic fix, for a caller that names a better one."""
    return str(exc).removesuffix(f"; {RESTORE_HINT}")


def _request_state_hint(name: str, path: Path) -> str:
    # a processed request's file can go missing too (deleted, a partial checkout): the ledger
    # then has its row, and the file comes back from DVC's cache or from a replay
    return (
        f"if request {name} was processed, restore the file (`dvc checkout {path}`) or replay "
        f"{name} (`kedro run --pipelines unlearn --params unlearn.request_id={name}`); "
        "otherwise process the requests before it first"
    )


class StateStore:
    """Reads and atomically writes model states under one root folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        """Folder of state ``name``."""
        return self.root / name

    def has(self, name: str) -> bool:
        """True when state ``name`` has both its model and its retain statistics."""
        return (self.path(name) / MODEL).is_file() and (self.path(name) / RETAIN_STATS).is_file()

    def model_bytes(self, name: str) -> bytes:
        """Raw bytes of the state's model file (for hashing and loading)."""
        path = self.path(name) / MODEL
        if not path.is_file():
            hint = (
                "run `kedro run --pipelines train` (with the same `--env`)"
                if name == "original"
                else _request_state_hint(name, path)
            )
            raise CheckpointError(f"state {name!r} has no model at {path}; {hint}")
        return path.read_bytes()

    def load_model(self, name: str) -> nn.Module:
        """The state's model, rebuilt from its self-describing file, in eval mode."""
        path = self.path(name) / MODEL
        try:
            return model_from_bytes(self.model_bytes(name), what=str(path))
        except CheckpointError as exc:
            raise CheckpointError(
                f"{_without_hint(exc)}. The file is corrupt or was not written by pgu: restore it "
                "(`dvc checkout`) or reproduce it (`dvc repro`)."
            ) from exc

    def load_stats(self, name: str) -> TensorBundle:
        """The state's retain statistics ``{layer: (d, d) float64}`` and their metadata."""
        path = self.path(name) / RETAIN_STATS
        if not path.is_file():
            hint = (
                "run `kedro run --pipelines representation` (with the same `--env`)"
                if name == "original"
                else _request_state_hint(name, path)
            )
            raise CheckpointError(f"state {name!r} has no statistics at {path}; {hint}")
        tensors, meta = load_tensors(path)
        return TensorBundle(tensors, meta)

    def stats_meta(self, name: str) -> dict | None:
        """The metadata of the state's statistics, read from the file's header alone (R_full of
        a large model is gigabytes); None where the state has no statistics file."""
        path = self.path(name) / RETAIN_STATS
        return file_meta(path) if path.is_file() else None

    def purged(self, name: str, filename: str = MODEL) -> bool:
        """Whether `pgu-admin purge` deleted the state's ``filename``: it leaves a tombstone
        ``<filename>.purged`` in its place (a file merely missing is damage, which
        :func:`pgu.core.deletion.check_start_state` names; and `dvc repro` deletes a stage's
        files before it runs the stage, so a missing file alone says nothing)."""
        return tombstone(self.path(name) / filename).is_file()

    def emptied(self, name: str) -> bool:
        """Whether the state's folder is there but empty: what a purge from before purges left
        tombstones leaves (or a stage `dvc repro` deleted the outputs of and did not rerun)."""
        folder = self.path(name)
        return folder.is_dir() and not any(folder.iterdir())

    def commit(self, name: str, files: dict[str, bytes]) -> Path:
        """Atomically make ``files`` the complete content of state ``name``."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{name}.new."))
        tmp.chmod(0o777 & ~UMASK)  # mkdtemp's 0700 would hide the state from other users
        try:
            for filename, data in files.items():
                with open(tmp / filename, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            final = self.path(name)
            if final.exists():
                # Replacing a state (a replay): move the old one aside first; a crash here leaves
                # no folder under the final name, and the rerun writes it again.
                old = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{name}.old."))
                os.replace(final, old / name)
                os.replace(tmp, final)
                shutil.rmtree(old)
            else:
                os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.path(name)

    def clean_leftovers(self) -> list[str]:
        """Clear what an interrupted :meth:`commit` left behind; one line per action.

        A ``.<name>.new.*`` folder was never renamed into place, so no ledger row vouches for
        it. A ``.<name>.old.*`` folder holds a state moved aside for a replay: superseded once
        the new state is in place; if the crash fell between the two renames it is still the
        state the ledger records, so it is moved back.
        """
        lines: list[str] = []
        if not self.root.is_dir():
            return lines
        for folder in sorted(self.root.iterdir()):
            match = _LEFTOVER.match(folder.name)
            if not match or not folder.is_dir():
                continue
            name, aside = match["name"], folder / match["name"]
            if match["kind"] == "old" and aside.is_dir() and not self.path(name).exists():
                os.replace(aside, self.path(name))
                lines.append(
                    f"restored state {name!r} from {folder} (a replay's interrupted commit)"
                )
            shutil.rmtree(folder)
            lines.append(f"removed {folder} (an interrupted commit's temporary folder)")
        return lines

    def remove(self, name: str, keep: tuple[str, ...] = (MODEL,)) -> list[Path]:
        """Delete every file of state ``name`` except those named in ``keep``; returns them."""
        removed = []
        folder = self.path(name)
        if folder.is_dir():
            for f in sorted(folder.iterdir()):
                if f.is_file() and f.name not in keep:
                    f.unlink()
                    removed.append(f)
        return removed


@dataclass(frozen=True)
class Workspace:
    """Where requests, states, reports and the ledger live."""

    requests_dir: Path
    states: StateStore
    reports_root: Path
    ledger_path: Path

    @classmethod
    def at(cls, requests: str, states: str, reports: str, ledger: str) -> Workspace:
        return cls(Path(requests), StateStore(states), Path(reports), Path(ledger))


PROCESS_NEW = (
    "To process new requests, run `kedro run --pipelines unlearn` or `dvc repro -s unlearn@<id>` "
    "(-s: that stage alone; `dvc repro` without it replays every stage whose files are missing, "
    "the purged ones too)."
)


def check_statistics_not_purged(store: StateStore) -> None:
    """Refuse to collect R_full again where `pgu-admin purge` deleted it.

    R_full sums every training sample, those the processed requests removed included:
    collecting it again would rebuild what the purge deleted. `pgu-admin archive` moves the
    purge's tombstone away with the queue, so a new queue collects it as usual.
    """
    path = store.path(ORIGINAL) / RETAIN_STATS
    if store.purged(ORIGINAL, RETAIN_STATS):
        raise RequestError(
            f"R_full ({path}) was deleted by `pgu-admin purge`: it sums the samples the processed "
            f"requests removed, so it is not collected again. {PROCESS_NEW} To start over from "
            f"the data, `pgu-admin archive` the queue first; to collect it again anyway, delete "
            f"{tombstone(path)}"
        )
