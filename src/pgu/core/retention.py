"""Retention: delete what a processed deletion has superseded, keep the proof.

After request k is processed, the states before it (models that still carry the forgotten
samples' influence, and statistics that include their contribution) are no longer served. The
purge deletes them from the workspace and from DVC's cache, while the ledger keeps every hash,
so an operator can prove what was served without keeping what was deleted. Each file it
deletes leaves a tombstone ``<file>.purged`` (when, and the file's DVC md5): `verify` tells a
purged state from a lost one by it, and the representation, unlearn and evaluate stages refuse
to rebuild what it marks (`dvc repro` replays a stage whose files are missing).

Kept: the latest state (the served model and the retain statistics the next request needs),
and the original model, which is the *statistics model*: R_forget of every future request must
be collected with it for R_retain to stay exact (METHOD §2).

The evaluate pipeline's caches beside the states (``retrained/<request>/``) hold models too:
the gold standard of an earlier request was trained on samples that later requests removed,
and a shadow model "with" the forget set was trained on it. Those are deleted as well; the
latest request's gold standard and its shadow models "without" the forget set are kept.
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import UTC, datetime
from pathlib import Path

from pgu.core.checkpoint import sha256_file
from pgu.core.deletion import check_start_state
from pgu.core.ledger import LedgerError, latest_rows, read_ledger
from pgu.core.requests import (
    ORIGINAL,
    QUEUE_FILE,
    beside_requests,
    laid_out_beside,
    write_queue,
)
from pgu.core.state import BASES, MODEL, PURGED_SUFFIX, RETAIN_STATS, StateStore, tombstone

RETRAINED = "retrained"  # the evaluation caches' folder, beside the states folder


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else []


def purge_superseded(
    states_root: str | Path, ledger_path: str | Path, dvc_cache: str | Path, dry_run: bool = False
) -> list[str]:
    """Delete superseded state files and evaluation caches (workspace and DVC cache).

    Returns:
        One line per action.
    """
    states_root, dvc_cache = Path(states_root), Path(dvc_cache)
    if not states_root.is_dir():
        raise FileNotFoundError(
            f"no states folder {states_root}: run pgu-admin from the project root, or pass "
            "--states and --ledger"
        )
    ledger = read_ledger(ledger_path)
    if ledger.empty:
        orphans = sorted(
            p.name
            for p in states_root.iterdir()
            if p.is_dir() and p.name[0] != "." and p.name != ORIGINAL
        )
        if orphans:
            raise LedgerError(
                f"states {orphans} exist but the ledger {ledger_path} lists no request: restore "
                "the ledger from your backup before purging anything"
            )
        return ["no request processed yet: nothing is superseded"]
    processed = list(dict.fromkeys(ledger["request_id"].astype(str)))  # first-seen order
    latest = processed[-1]
    # the served state must be what the ledger records, on an unbroken chain: after a replay
    # that left it stale, the replayed state is the one to keep and this would delete it
    check_start_state(StateStore(states_root), ledger, latest)
    doomed: list[Path] = []
    for name in [ORIGINAL, *processed[:-1]]:
        folder = states_root / name
        if folder.is_dir():
            keep = {MODEL} if name == ORIGINAL else set()
            doomed += [f for f in sorted(folder.iterdir()) if f.is_file() and f.name not in keep]
    retrained = states_root.parent / RETRAINED
    for name in processed[:-1]:
        doomed += _files(retrained / name)
    doomed += [f for f in _files(retrained / latest / "shadow") if f.parent.name.endswith("-with")]
    doomed = [f for f in doomed if not f.name.endswith(PURGED_SUFFIX)]  # a purge's own marks
    # superseded state files already gone without a tombstone (a purge from before purges left
    # them): marked now, so that the checks that refuse to rebuild purged files see them too
    unmarked = [
        folder / filename
        for name, filenames in [(ORIGINAL, (RETAIN_STATS,)), *((n, _STATE) for n in processed[:-1])]
        if (folder := states_root / name).is_dir()
        for filename in filenames
        if not (folder / filename).exists() and not tombstone(folder / filename).exists()
    ]
    lines = [
        f"keeping {states_root / latest} (served) and {states_root / ORIGINAL / MODEL} "
        "(statistics model)"
    ]
    # DVC stores equal bytes once: an object that a kept file also points to stays. Only kept
    # files of a doomed file's size can share its bytes, so only those are read.
    gone, sizes = set(doomed), {f.stat().st_size for f in doomed}
    kept = {
        _md5(f)
        for f in [*_files(states_root), *_files(retrained)]
        if f not in gone and f.stat().st_size in sizes
    }
    verb = "would delete" if dry_run else "deleted"
    for f in doomed:
        digest = _md5(f)
        cached = dvc_cache / "files" / "md5" / digest[:2] / digest[2:]
        shared = digest in kept
        if not cached.exists():
            lines.append(f"{verb} {f}")
        elif shared:
            lines.append(f"{verb} {f} (its DVC cache object is a kept file's too)")
        else:
            lines.append(f"{verb} {f} and its DVC cache object {cached}")
        if not dry_run:
            # the mark first: a purge interrupted after it leaves a purged file, not a lost one
            _mark_purged(f, f"deleted by pgu-admin purge at {{}}; DVC md5 {digest}")
            f.unlink()
            if not shared:
                cached.unlink(missing_ok=True)
    for f in unmarked:
        lines.append(f"{'would mark' if dry_run else 'marked'} {f} as purged (already gone)")
        if not dry_run:
            _mark_purged(
                f,
                "already gone when pgu-admin purge ran at {} (an earlier purge's, from before "
                "purges left tombstones)",
            )
    if not doomed and not unmarked:
        lines.append("nothing superseded is left on disk")
    return lines


# What a queue's runs write besides states and reports, beside its requests folder: (layer, name)
_QUEUE_OUTPUTS = (
    ("08_reporting", "unlearn_last_run.json"),
    ("08_reporting", "evaluation_last_run.json"),
    ("08_reporting", "latest_audit_mia.png"),
    ("07_model_output", "cgs_preview"),
)


_STATE = (MODEL, RETAIN_STATS, BASES)  # the files of a request's state


def purged_for_audit(store: StateStore, request_id: str, after: str) -> bool:
    """Whether auditing ``request_id`` needs what `pgu-admin purge` deleted: its state or its
    starting state (by their tombstones; an empty folder is a purge's from before tombstones),
    or the evaluation models trained with its forget set (which an audit would train again)."""
    states = [n for n in (after, request_id) if n != ORIGINAL]
    if any(store.purged(n) or store.emptied(n) for n in states):
        return True
    return any((store.root.parent / RETRAINED / request_id).rglob(f"*{PURGED_SUFFIX}"))


def _mark_purged(path: Path, why: str) -> None:
    """Leave ``path``'s tombstone, saying ``why`` (``{}`` is replaced by the UTC time)."""
    tombstone(path).write_text(why.format(datetime.now(UTC).isoformat()) + "\n")


def _entries(folder: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    """A folder's entries, without dotfiles (git's .gitignore, leftovers) and ``skip``."""
    if not folder.is_dir():
        return []
    return sorted(f for f in folder.iterdir() if f.name[0] != "." and f.name not in skip)


def archive_queue(requests_dir: str | Path, stamp: str, dry_run: bool = False) -> list[str]:
    """Move a queue's whole history aside, to start a new queue on new data or a new model.

    ``requests_dir`` is laid out as in the catalog (``<root>/01_raw/<sub>/deletion_requests``).
    Moved under ``<root>/archive/<sub>/<stamp>/``, each to its path relative to ``<root>``: the
    request files and the queue, the ledger, every request's reports, the last runs' summaries
    and CGS preview, every state but ``original`` (the current model, which the train pipeline
    replaces; its model file is copied in, since the ledger's first row names it) and the
    evaluation caches. All or nothing: a move that fails moves back what went before. Nothing is
    deleted; an empty queue is left.

    Returns:
        One line per action.
    """
    requests_dir = Path(requests_dir)
    ledger = laid_out_beside(requests_dir, "08_reporting", "ledger.csv")
    parts = requests_dir.parts
    root = Path(*parts[: len(parts) - 1 - parts[::-1].index("01_raw")])  # before the last 01_raw
    states = beside_requests(requests_dir, "06_models", "states")
    queue_file = requests_dir / QUEUE_FILE
    files = [f for f in _entries(requests_dir) if f.suffix == ".yml" and f != queue_file]
    models = _entries(states, (ORIGINAL,)) + _entries(states.parent / RETRAINED)
    # the purge's tombstones in the original's folder belong to this queue: a new one collects
    # R_full again (the representation stage refuses to while its tombstone is there)
    models += sorted((states / ORIGINAL).glob(f"*{PURGED_SUFFIX}"))
    history = files + models + _entries(beside_requests(requests_dir, "08_reporting", "requests"))
    history += [ledger] if ledger.is_file() else []
    if not history:
        return [f"nothing to archive: no request filed in {requests_dir} and no ledger {ledger}"]
    outputs = [beside_requests(requests_dir, layer, name) for layer, name in _QUEUE_OUTPUTS]
    moving = history + [f for f in outputs if f.exists()]
    moving += [queue_file] if queue_file.is_file() else []  # last: its requests go before it
    target = beside_requests(requests_dir, "archive", stamp)  # <root>/archive/<sub>/<stamp>
    n = 1
    while target.exists():  # archived twice within a stamp: never mix two archives
        n += 1
        target = beside_requests(requests_dir, "archive", f"{stamp}-{n}")
    verb = "would move" if dry_run else "moved"
    lines = [f"{verb} {path} -> {target / path.relative_to(root)}" for path in moving]
    # copied, so that `pgu-admin verify` can check the archive: the ids' index, and the original
    # model the ledger's first request started from (if it is still that one)
    copies = []
    index = beside_requests(requests_dir, "02_intermediate", "sample_index.csv")
    if index.is_file() and files:
        copies.append((index, "the index its requests' ids name"))
    original = states / ORIGINAL / MODEL
    # the first request's latest row (a replay appends rows with a new original)
    rows = latest_rows(read_ledger(ledger)) if ledger.is_file() else {}
    first = next(iter(rows.values()), None)
    if first is not None and original.is_file():
        if sha256_file(original) == first["input_model_sha256"]:
            copies.append((original, "the ledger's first request started from it"))
        else:
            lines.append(
                f"not copied: {original}, retrained since the ledger's first request started "
                "from another model (its hash is in the archived ledger)"
            )
    lines += [f"{'would copy' if dry_run else 'copied'} {f} ({why})" for f, why in copies]
    if not dry_run:
        _move_all(moving, root, target)
        for path, _ in copies:
            (target / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.relative_to(root))
        write_queue(requests_dir, [])
        lines.append(f"started an empty queue {queue_file}")
    if models:
        lines.append(
            f"{target} {'would hold' if dry_run else 'holds'} models that saw the samples its "
            "requests forgot, and DVC's cache (.dvc/cache) may hold copies of the states: delete "
            "the archive when the record is no longer needed (`pgu-admin purge` before "
            "archiving deletes superseded states from both)"
        )
    return lines


def _move_all(moving: list[Path], root: Path, target: Path) -> None:
    """Move each path to ``target`` / its path relative to ``root``; all or nothing."""
    done: list[tuple[Path, Path]] = []
    try:
        for path in moving:
            dest = target / path.relative_to(root)
            if dest.exists():  # a new archive folder is empty; never overwrite one
                raise FileExistsError(f"{dest} exists already")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, dest)
            done.append((path, dest))
    except OSError as exc:
        for path, dest in reversed(done):
            shutil.move(dest, path)
        if target.is_dir() and not any(f.is_file() for f in target.rglob("*")):
            shutil.rmtree(target)  # only the folders the moves made
        raise OSError(
            f"archiving into {target} failed ({exc}); everything moved before was moved back, "
            "so the queue is as it was"
        ) from exc
