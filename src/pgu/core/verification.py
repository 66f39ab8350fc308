"""Verify a queue's audit trail from hashes alone: what ``pgu-admin verify`` reports.

Replaying requests reproduces their bytes only on the machine that wrote them (README,
"Determinism"); checking the trail does not need that. Every check reads files and the ledger:
- the sample bundle and index are the data R_full was collected over (its fingerprint);
- every processed request's file hashes to its ledger row;
- the queue, resolved against the sample index in order (with the samples the original model
  never trained on left out, as its statistics record them), gives each processed request the
  ids its row hashed;
- the served state's model and statistics are the files the ledger's chain ends in, and the
  chain is unbroken back to the original;
- the served state's bases are the ones its row records;
- every earlier state still on disk (model, statistics, bases) is what its row recorded (a
  purged one is said to be, by the tombstones the purge left; a missing one fails);
- the original model is the one the first request started from, and the one the train stage
  wrote (its metrics, tracked in git, record the hash);
- R_full, unless purged, is the statistics the first request started from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pgu.core.checkpoint import CheckpointError, file_meta, load_tensors, sha256_file
from pgu.core.data import data_fingerprint
from pgu.core.deletion import (
    STATE_FILES,
    check_data_unchanged,
    check_requests_unchanged,
    check_start_state,
    ids_digest,
    plan_requests,
)
from pgu.core.ledger import LedgerError, read_ledger
from pgu.core.requests import (
    ORIGINAL,
    RequestError,
    beside_requests,
    laid_out_beside,
    load_requests,
)
from pgu.core.state import BASES, MODEL, PURGED_SUFFIX, RETAIN_STATS, StateStore

_FAILURES = (RequestError, LedgerError, CheckpointError, OSError, ValueError)


def verify_queue(requests_dir: str | Path) -> list[tuple[bool | None, str]]:
    """Check the audit trail of the queue in ``requests_dir`` (laid out as in the catalog).

    Returns:
        (passed, what was checked and found) per check, in the order above; passed is None for
        a check that could not be made (an archive keeps no sample bundle).
    """
    requests_dir = Path(requests_dir)
    ledger_path = laid_out_beside(requests_dir, "08_reporting", "ledger.csv")
    store = StateStore(beside_requests(requests_dir, "06_models", "states"))
    try:
        ledger = read_ledger(ledger_path)
    except _FAILURES as exc:
        return [(False, f"ledger {ledger_path}: {exc}")]
    processed = list(dict.fromkeys(ledger["request_id"].astype(str)))  # first-seen order
    if not processed:
        # the unlearn stage writes a report per request it processes: reports without ledger
        # rows mean a missing ledger (it is in neither git nor DVC), not an empty queue
        reports = beside_requests(requests_dir, "08_reporting", "requests")
        shown = sorted(
            f.parent.name
            for f in (reports.glob("*/metrics.json") if reports else [])
            if f.is_file()
        )
        if shown:
            return [
                (
                    False,
                    f"ledger {ledger_path} lists no request, but {reports} holds the reports of "
                    f"processed requests {shown}: the trail cannot be checked without the ledger "
                    "that processed them. It is in neither git nor DVC: get it from the operator "
                    '(README, "Auditing a queue"), or replay the queue here (`dvc repro`) to '
                    "check this machine's own trail",
                )
            ]
        return [(True, f"ledger {ledger_path}: no request processed yet, nothing to verify")]
    rows = {rid: ledger[ledger["request_id"].astype(str) == rid].iloc[-1] for rid in processed}
    latest = processed[-1]
    results: list[tuple[bool | None, str]] = [
        (True, f"ledger {ledger_path}: {len(processed)} processed, {latest} last")
    ]

    def check(fn, found: str) -> None:
        try:
            fn()
        except _FAILURES as exc:
            results.append((False, str(exc)))
        else:
            results.append((True, found))

    bundle = beside_requests(requests_dir, "02_intermediate", "samples.safetensors")
    index_path = beside_requests(requests_dir, "02_intermediate", "sample_index.csv")
    if bundle.is_file() and index_path.is_file():
        check(
            lambda: _check_data(store, bundle, index_path, processed),
            "data: the sample bundle and index are what R_full was collected over",
        )
    else:
        results.append((None, f"data: not checked (no {bundle} beside {index_path})"))
    check(
        lambda: check_requests_unchanged(requests_dir, ledger),
        "request files: each processed one hashes to its ledger row",
    )
    check(
        lambda: _check_ids(requests_dir, index_path, store, rows, latest),
        "forgotten ids: each processed request resolves, against the sample index, to the ids "
        "it hashed",
    )
    check(
        lambda: check_start_state(store, ledger, latest),
        f"served state {latest}: model and statistics are what the ledger's chain ends in, and "
        f"the chain back to {ORIGINAL} is unbroken",
    )
    check(
        lambda: _check_file(
            store.path(latest) / BASES,
            rows[latest]["bases_sha256"],
            f"request {latest}'s bases_sha256",
            f"restore it (`dvc checkout`, your backup), or replay {latest} (`dvc repro -s "
            f"unlearn@{latest}`)",
        ),
        f"served state {latest}: its bases are the ones the ledger records",
    )
    for rid in processed[:-1]:
        if store.purged(rid):
            results.append((True, f"state {rid}: purged (the ledger keeps its hashes)"))
        elif store.emptied(rid):  # no tombstones: a purge from before purges left them?
            results.append(
                (
                    None,
                    f"state {rid}: not checked: its folder is empty without the purge's "
                    f"tombstones (an older purge: run `pgu-admin purge` once to mark what it "
                    f"deleted; otherwise it was lost: restore or replay it)",
                )
            )
        elif not (store.path(rid) / MODEL).is_file():
            results.append(
                (
                    False,
                    f"state {rid}: its model is missing and `pgu-admin purge` left no tombstone "
                    f"({MODEL}{PURGED_SUFFIX}): lost, not purged; restore it (`dvc checkout "
                    f"{store.path(rid) / MODEL}`, your backup) or replay it (`dvc repro -s "
                    f"unlearn@{rid}`)",
                )
            )
        else:
            check(lambda rid=rid: _check_state(store, rid, rows[rid]), f"state {rid}: as recorded")
    first = rows[processed[0]]
    original = store.path(ORIGINAL) / MODEL
    fix = (
        "it was retrained since (new data or code): restore the original the ledger names "
        "(`dvc checkout`, your backup, or an archive), or replay every request from it (`dvc "
        "repro`), or set this queue aside with `pgu-admin archive` to start over"
    )
    check(
        lambda: _check_file(original, first["input_model_sha256"], f"{processed[0]}'s input", fix),
        f"original model: the one {processed[0]} started from",
    )
    # the train stage's metrics (tracked in git) name the model it wrote: an anchor outside the
    # ledger, so a model damaged or swapped before any request (which the ledger would then
    # record as the original) is caught too
    metrics = beside_requests(requests_dir, "08_reporting", "train/metrics.json")
    if metrics is not None and metrics.is_file() and original.is_file():
        check(
            lambda: _check_trained(original, metrics),
            f"original model: the one the train stage wrote ({metrics})",
        )
    r_full = store.path(ORIGINAL) / RETAIN_STATS
    if store.purged(ORIGINAL, RETAIN_STATS):
        results.append((True, "R_full: purged (the ledger keeps its hash)"))
    elif not r_full.is_file() and "archive" in requests_dir.parts:  # it keeps no statistics
        results.append((None, f"R_full: not checked (an archive keeps none: no {r_full})"))
    else:
        check(
            lambda: _check_file(
                r_full,
                first["input_stats_sha256"],
                f"{processed[0]}'s input statistics",
                "restore it (`dvc checkout`, your backup), or collect it again with the original "
                "model the ledger names (`kedro run --pipelines representation`)",
            ),
            f"R_full: the statistics {processed[0]} started from",
        )
    return results


def _check_trained(model: Path, metrics: Path) -> None:
    recorded = json.loads(metrics.read_text()).get("model_sha256")
    if recorded and sha256_file(model) != recorded:
        raise CheckpointError(
            f"{model} is not the model the train stage wrote ({metrics} records {recorded}): it "
            "was damaged or replaced since; restore it (`dvc checkout`, your backup), or retrain "
            "(`kedro run --pipelines train`) and replay the requests"
        )


def _check_ids(
    requests_dir: Path, index_path: Path, store: StateStore, rows: dict, latest: str
) -> None:
    """Each processed request's ids, resolved in queue order, hash to its ledger row."""
    if not index_path.is_file():
        raise FileNotFoundError(f"no sample index {index_path}: the ids cannot be resolved")
    index = pd.read_csv(index_path)
    excluded: list[int] = []
    for name in (ORIGINAL, latest):  # R_full records the exclusions; every state carries them
        if (store.path(name) / RETAIN_STATS).is_file():
            excluded = file_meta(store.path(name) / RETAIN_STATS).get("excluded_sample_ids", [])
            break
    num_classes = int(index["label"].max()) + 1
    plans = plan_requests(load_requests(requests_dir), index, num_classes, set(), None, excluded)
    for plan in plans:
        rid = plan.request.id
        if rid in rows and ids_digest(plan.forget_ids) != rows[rid]["ids_sha256"]:
            raise RequestError(
                f"request {rid} resolves to other ids than its ledger row hashed: the sample "
                f"index {index_path} or an earlier request changed since it was processed"
            )


def _check_data(store: StateStore, bundle: Path, index_path: Path, processed: list) -> None:
    tensors, _ = load_tensors(bundle)
    check_data_unchanged(store, data_fingerprint(tensors, pd.read_csv(index_path)), processed)


def _check_state(store: StateStore, rid: str, row: pd.Series) -> None:
    fix = (
        f"restore it (`dvc checkout`, or your backup), or replay {rid} and the requests after it "
        f"(`kedro run --pipelines unlearn --params unlearn.request_id={rid}`, in queue order)"
    )
    for filename, column in (*STATE_FILES, (BASES, "bases_sha256")):
        _check_file(store.path(rid) / filename, row[column], f"request {rid}'s {column}", fix)


def _check_file(path: Path, digest: str, what: str, fix: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {fix}")
    if sha256_file(path) != digest:
        raise CheckpointError(f"{path} is not the file the ledger records as {what}; {fix}")
