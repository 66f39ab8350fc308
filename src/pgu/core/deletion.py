"""Processing deletion requests end to end: plan, then for each request in order compute the
forget statistics, update the retain statistics, derive the bases, unlearn, commit and record.

Only the forget samples, the val split, the current model, the statistics model and the stored
statistics are read — never the retain samples. R_forget and per-sample outputs on the forget
set stay in memory; what is persisted is the new model, the updated R_retain, the bases,
aggregate metrics and hashes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pgu.core import plots
from pgu.core.cgs import bases_from_params, retain_statistics
from pgu.core.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    json_bytes,
    model_to_bytes,
    sha256_bytes,
    sha256_file,
    stale_temporaries,
    tensors_to_bytes,
)
from pgu.core.data import SampleSet, split_set
from pgu.core.depoisoning import DepoisonConfig, accuracy, depoison, depoison_bases
from pgu.core.ledger import LedgerError, append_row, latest_rows, read_ledger
from pgu.core.representation import collect_representations, tracked_layers
from pgu.core.requests import ORIGINAL, DeletionRequest, RequestError, resolve
from pgu.core.state import (
    BASES,
    MODEL,
    PROCESS_NEW,
    PURGED_SUFFIX,
    RETAIN_STATS,
    StateStore,
    Workspace,
    tombstone,
)
from pgu.core.training import predict_logits
from pgu.core.unlearning import UnlearnConfig, unlearn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestPlan:
    """A validated request: what it forgets and which state it starts from.

    ``removed_classes`` are the classes earlier requests of the queue removed whole: a retrained
    model never predicts them, so the stopping rule's validation metrics leave their samples
    out (:func:`held_out`). Counted in, they make every later request look like damage.
    """

    request: DeletionRequest
    forget_ids: np.ndarray  # (n,) int64 sorted
    after: str
    removed_classes: tuple[int, ...] = ()


def held_out(samples: SampleSet, index: pd.DataFrame, plan: RequestPlan) -> SampleSet:
    """The val split the stopping rule reads for ``plan``: without earlier removed classes."""
    val = split_set(samples, index, "val")
    if not plan.removed_classes:
        return val
    gone = torch.isin(val.y, torch.tensor(plan.removed_classes, dtype=val.y.dtype))
    return val.without_ids(val.sample_id[gone].tolist())


def plan_requests(
    requests: Sequence[DeletionRequest],
    index: pd.DataFrame,
    num_classes: int,
    done: set[str],
    only: str | None = None,
    excluded: Sequence[int] = (),
) -> list[RequestPlan]:
    """Validate the queue in order and return the requests to process now.

    Every request up to the last one to process is resolved (earlier ones fix which ids are
    already forgotten), so any bad request fails here, before a file is touched.

    Args:
        requests: the queue, in order.
        index: sample index table.
        num_classes: classes of the task.
        done: ids of requests already processed (from the ledger).
        only: process just this request (a DVC stage, or a replay), whatever ``done`` says.
        excluded: train ids the original model never trained on (``train.exclude_sample_ids``,
            as R_full's metadata records them): refused when named, left out of a class.

    Returns:
        Plans in processing order (empty when nothing is pending).
    """
    ids = [r.id for r in requests]
    if only is not None and only not in ids:
        raise RequestError(f"request {only!r} is not in the queue; queued: {ids}")
    never = np.unique(np.asarray(excluded, dtype=np.int64))
    plans, forgotten, after = [], np.empty(0, dtype=np.int64), ORIGINAL
    removed: set[int] = set()
    for request in requests:
        forget_ids = resolve(request, index, forgotten, num_classes, never)
        if never.size:  # resolve has checked the ids are int64
            unseen = np.intersect1d(np.asarray(request.sample_ids, dtype=np.int64), never)
            if unseen.size:
                raise RequestError(
                    f"request {request.id}: ids {unseen[:10].tolist()} were left out of the "
                    "original model's training (train.exclude_sample_ids): it never learned "
                    "them, so there is nothing to forget; remove them from the request"
                )
            forget_ids = np.setdiff1d(forget_ids, never)  # a class's samples it never saw
            if forget_ids.size == 0:
                raise RequestError(
                    f"request {request.id}: every sample of classes {list(request.classes)} was "
                    "left out of the original model's training (train.exclude_sample_ids)"
                )
        if (only is None and request.id not in done) or request.id == only:
            plans.append(RequestPlan(request, forget_ids, after, tuple(sorted(removed))))
        forgotten = np.union1d(forgotten, forget_ids)
        removed |= set(request.classes)
        after = request.id
        if request.id == only:
            break
    if only is None and plans:
        first = ids.index(plans[0].request.id)
        skipped = [r for r in ids[first:] if r in done]
        if skipped:
            raise RequestError(
                f"requests {skipped} are in the ledger but come after pending request "
                f"{plans[0].request.id}; the queue must be processed in order"
            )
    return plans


def check_data_unchanged(
    store: StateStore, fingerprint: str, processed: Sequence[str] = ()
) -> dict:
    """Refuse a sample bundle or index that is not what R_full was collected over.

    R_retain = R_full − R_forget is exact only where the forget samples are inputs R_full
    summed, normalised as they were: a bundle or index rebuilt since (other data, another
    split, hence other normalisation statistics) would subtract what R_full never saw, and
    requests would be resolved against another split. ``fingerprint`` is
    :func:`pgu.core.data.data_fingerprint` of the data at hand. R_full's metadata records it,
    and every request's statistics carry it (and the excluded ids) on, so where `pgu-admin
    purge` deleted R_full the latest of the ``processed`` states (ledger order) answers.

    Returns:
        The metadata of those statistics (empty where there are none yet, or they predate
        fingerprints).
    """
    for name in (ORIGINAL, *reversed(processed)):
        meta = store.stats_meta(name)
        if meta is not None:
            break
    else:
        return {}  # no statistics yet: loading them later says what to run
    stored = meta.get("data_sha256")
    if stored is None:
        logger.warning(
            "the statistics of state %r predate data fingerprints, so this run cannot check "
            "that it reads the data they were collected over; rerun `kedro run --pipelines "
            "representation` (or `dvc repro`) to record one",
            name,
        )
        return {}
    if stored != fingerprint:
        raise CheckpointError(
            "the sample bundle and sample index (the data pipeline's outputs) are not the data "
            "the original model's statistics were collected over (the data pipeline ran again "
            "with other data or split settings, or the files were edited): requests would "
            "subtract samples R_full never summed. Restore them: `kedro run --pipelines data` "
            "rewrites the same bytes if the source and its settings are as they were, or `dvc "
            "checkout data/02_intermediate/sample_index.csv data/02_intermediate/samples"
            ".safetensors` (under `--env cifar10`, its `cifar10/` files). Or start over on this "
            "data: `kedro run` (data, train, representation), then process the requests again, "
            "or, if they were filed against the old data, `pgu-admin archive` for a new queue"
        )
    return meta


def ids_digest(ids: np.ndarray) -> str:
    """The ledger's ``ids_sha256``: sha256 of the sorted ids as little-endian int64."""
    return sha256_bytes(np.sort(np.asarray(ids)).astype("<i8").tobytes())


# (file, ledger column) of what a state hands to the next request
STATE_FILES = ((MODEL, "output_model_sha256"), (RETAIN_STATS, "output_stats_sha256"))
_REPLAY = "`kedro run --pipelines unlearn --params unlearn.request_id={}`"


def check_requests_unchanged(requests_dir: str | Path, ledger: pd.DataFrame) -> None:
    """Refuse when a processed request's file differs from the one its ledger row hashed.

    Planning resolves every request from its file, so an edited processed request would change
    which ids count as already forgotten: an id taken out of it could be filed and subtracted
    from the statistics a second time.
    """
    for rid, row in latest_rows(ledger).items():
        path = Path(requests_dir) / f"{rid}.yml"
        restore = f"restore it (`git checkout -- {path}`: request files live in git)"
        if not path.is_file():
            raise RequestError(
                f"request {rid} was processed (it is in the ledger) but {path} is missing; "
                f"{restore}"
            )
        if sha256_file(path) != row["request_sha256"]:
            raise RequestError(
                f"request {rid} was processed, but {path} has changed since (its sha256 differs "
                "from the ledger's request_sha256): processed requests cannot be edited; "
                f"{restore}, and file a new request (`pgu-admin file-request`) for anything "
                "else to forget"
            )


def check_start_state(
    store: StateStore,
    ledger: pd.DataFrame,
    name: str,
    digests: Mapping[str, str | None] | None = None,
) -> None:
    """Refuse to start a request from state ``name`` unless it is what the ledger records.

    The state's model and statistics must hash to the outputs of the ledger's last row for
    ``name``, and every request on the chain back to the original must have started from the
    outputs its predecessor's last row records: a replay of an earlier request with another
    result leaves the requests after it built from a state that no longer exists. The original
    is not checked here: its statistics carry its model's hash, which ``execute_request``
    compares. ``digests`` ({file name: sha256}) spares hashing a file the caller has hashed.
    """
    if name == ORIGINAL:
        return
    rows = latest_rows(ledger)
    if name not in rows:
        raise RequestError(
            f"state {name!r} has not been processed (no ledger row); process the requests "
            "before it first, in queue order"
        )
    for filename, column in STATE_FILES:
        path = store.path(name) / filename
        fix = f"restore it (`dvc checkout {path}`) or replay {name} ({_REPLAY.format(name)})"
        if not path.is_file():
            raise CheckpointError(f"{path} is missing, but request {name} was processed; {fix}")
        if ((digests or {}).get(filename) or sha256_file(path)) != rows[name][column]:
            raise CheckpointError(
                f"{path} is not the file request {name} wrote (its sha256 differs from the "
                f"ledger's {column}): it was replaced or corrupted; {fix}"
            )
    current, seen = name, set()
    while current != ORIGINAL:
        row = rows.get(current)
        if row is None or current in seen:
            raise LedgerError(
                f"the ledger's chain from {name!r} back to {ORIGINAL!r} is broken at "
                f"{current!r}; restore the ledger from your backup (it is in neither git nor DVC: "
                'see README, "Auditing a queue")'
            )
        seen.add(current)
        before = str(row["input_state"])
        if before != ORIGINAL and before in rows and _handed(rows[before]) != _taken(row):
            raise RequestError(
                f"request {current} was processed from an earlier version of state {before!r}, "
                f"which has been replayed since with another result, so state {name!r} is "
                f"stale: replay {current} and every processed request after it, in queue "
                f"order (`dvc repro`, or {_REPLAY.format(current)} and so on), then process "
                "new requests"
            )
        current = before


def check_no_lost_rows(store: StateStore, plans: Sequence[RequestPlan], rows: dict) -> None:
    """Refuse to process requests whose states exist although the ledger does not list them.

    A run killed between a state's commit and its ledger row leaves one such state, the first
    pending request's, and rerunning completes it. States of later pending requests mean the
    ledger lost rows (deleted, or cut back): processing would overwrite served states without a
    trace of the earlier ones.
    """
    pending = [p.request.id for p in plans if p.request.id not in rows]
    if pending and (store.path(pending[0]) / MODEL).is_file():
        logger.warning(
            "state %s exists but the ledger has no row for it (a run killed before its row was "
            "written, or a ledger cut back by one row): it is recomputed and replaced",
            pending[0],
        )
    lost = [rid for rid in pending[1:] if (store.path(rid) / MODEL).is_file()]
    if lost:
        raise LedgerError(
            f"states of requests {lost} exist but the ledger does not list them: the ledger has "
            "lost rows (deleted or cut back?); restore it from your backup before processing "
            "anything, or the states would be overwritten without a trace"
        )


def check_not_purged(store: StateStore, plans: Sequence[RequestPlan], rows: dict) -> None:
    """Refuse to replay a request whose state, or whose starting state, `pgu-admin purge` deleted
    (from the original: R_full, which the replay reads).

    Purged states held samples that later requests removed: a replay (what `dvc repro` runs for
    a stage whose files are missing) would rebuild them from the data.
    """
    for plan in plans:
        rid = plan.request.id
        if rid not in rows:
            continue  # pending: its starting state is the served one, never purged
        marks = {
            f"state {name}": f"{store.path(name)}/*{PURGED_SUFFIX}"
            for name in (rid, plan.after)
            if name != ORIGINAL and store.purged(name)
        }
        if plan.after == ORIGINAL and store.purged(ORIGINAL, RETAIN_STATS):
            marks["R_full"] = str(tombstone(store.path(ORIGINAL) / RETAIN_STATS))
        if marks:
            what, mark = next(iter(marks.items()))
            raise RequestError(
                f"{rid} was processed and `pgu-admin purge` has deleted {what} (it held samples "
                f"later requests removed); replaying {rid} would rebuild it, so it is not "
                f"replayed. {PROCESS_NEW} To rebuild it on purpose (an audit replay on this "
                f"machine), delete the purge's tombstones {mark} first"
            )


def stale_after(request_id: str, rows: dict[str, dict], row: dict) -> list[str]:
    """Processed requests that started from ``request_id``'s state as it was before ``row``.

    A replay that gives another result leaves them (and every request after them) stale. The
    replay itself is allowed: `dvc repro` replays a changed request and then each later one in
    queue order, and no stage can tell that apart from a lone replay; instead
    :func:`check_start_state` refuses a stale state as a starting point until it is replayed.
    """
    return [
        rid
        for rid, r in rows.items()
        if r["input_state"] == request_id and _taken(r) != _handed(row)
    ]


def _handed(row: dict) -> tuple[str, str]:
    """The (model, statistics) hashes a ledger row's request left for the next one."""
    return row["output_model_sha256"], row["output_stats_sha256"]


def _taken(row: dict) -> tuple[str, str]:
    """The (model, statistics) hashes a ledger row's request started from."""
    return row["input_model_sha256"], row["input_stats_sha256"]


_REPORT_FILES = ("metrics.json", "unlearning.png", "spectrum.png")  # what execute_request writes


def clean_leftovers(workspace: Workspace) -> list[str]:
    """Delete the temporary files and folders a killed run left behind; one line per action.

    Only this pipeline's own temporary names are touched: the state store's commit folders,
    and the atomic writes of a request's report files and of the ledger.
    """
    lines = workspace.states.clean_leftovers()
    candidates = stale_temporaries(workspace.ledger_path)
    for folder in sorted(workspace.reports_root.glob("*/")):
        for name in _REPORT_FILES:
            candidates += stale_temporaries(folder / name)
    for path in candidates:
        path.unlink()
        lines.append(f"removed {path} (an interrupted write's temporary file)")
    return lines


def execute_request(
    plan: RequestPlan,
    store: StateStore,
    samples: SampleSet,
    index: pd.DataFrame,
    cgs_params: dict,
    config: UnlearnConfig,
    reports_root: str | Path,
    ledger_path: str | Path,
    device: torch.device,
    batch_size: int = 256,
    replay: bool = False,
    depoison_config: DepoisonConfig | None = None,
    cuda_graph: bool = False,
) -> dict:
    """Process one request and commit its state, report and ledger row.

    A request with ``purpose: depoison`` is served by :func:`_depoison` (``depoison_config``,
    default: :class:`DepoisonConfig`'s defaults) instead of unlearning; the rest is the same.
    ``cuda_graph`` is passed to :func:`pgu.core.unlearning.unlearn` (how it runs on CUDA, not
    what it computes).

    Returns:
        The ledger row written.
    """
    start = time.perf_counter()
    request = plan.request
    model_in_bytes = store.model_bytes(plan.after)
    stats_path = store.path(plan.after) / RETAIN_STATS
    stats_in_sha = sha256_file(stats_path) if stats_path.is_file() else None  # hashed once
    digests = {MODEL: sha256_bytes(model_in_bytes), RETAIN_STATS: stats_in_sha}
    ledger = read_ledger(ledger_path)
    check_start_state(store, ledger, plan.after, digests)
    model = store.load_model(plan.after)
    stats_in = store.load_stats(plan.after)
    stats_model_sha = stats_in.meta.get("stats_model_sha256")
    stats_model_bytes = store.model_bytes(ORIGINAL)
    if sha256_bytes(stats_model_bytes) != stats_model_sha:
        path = store.path(ORIGINAL) / MODEL
        if ledger.empty:  # R_full alone rests on it: collecting it again is a fix
            fix = (
                "if you retrained it on purpose, collect R_full again (`kedro run --pipelines "
                f"representation`); otherwise it was damaged: restore it (`dvc checkout {path}`, "
                "your backup) or retrain it (`kedro run`)"
            )
        else:  # processed requests rest on it: collecting R_full again would not mend them
            fix = (
                "it was damaged or retrained since the processed requests began: restore the "
                f"original they started from (`dvc checkout {path}`, your backup; its hash is "
                "the input_model_sha256 of the first request's latest ledger row). A model "
                "retrained on purpose starts a new queue: `pgu-admin archive` this one first"
            )
        raise CheckpointError(
            f"the statistics of state {plan.after!r} were collected with the original model "
            f"{stats_model_sha}, but {path} is now {sha256_bytes(stats_model_bytes)}, so "
            f"R_full − R_forget would be inexact: {fix}"
        )
    stats_model = store.load_model(ORIGINAL)

    forget = samples.with_ids(plan.forget_ids)
    val = held_out(samples, index, plan)
    compute_start = time.perf_counter()  # the request proper: statistics, bases, unlearning
    # R_forget with the model that produced R_full, so that R_retain is exact (METHOD §2).
    r_forget = collect_representations(
        stats_model, forget.batches(batch_size), device=device, keep_on_device=True
    )
    r_retain = retain_statistics(stats_in.tensors, r_forget, device=device)
    del r_forget  # derived from deleted samples only: never persisted
    if request.purpose == "depoison":
        depoison_config = depoison_config or DepoisonConfig()
        result, bases, summary = _depoison(
            model, r_retain, forget, val, cgs_params, depoison_config, device
        )
    else:
        bases, summary = bases_from_params(r_retain, cgs_params, device=device)
        classes = list(request.classes) or None
        # the target and the guards read the original's val metrics (a later request's model
        # has drifted); a request on the original itself needs no second evaluation
        original = None if plan.after == ORIGINAL else stats_model
        result = unlearn(
            model,
            bases,
            forget,
            val,
            config,
            forget_classes=classes,
            device=device,
            original=original,
            cuda_graph=cuda_graph,
        )
    compute_seconds = time.perf_counter() - compute_start
    out_model = result.model.cpu().eval()
    # both loops evaluated forget and val before they started and after every epoch they kept
    before, kept = result.history[0], result.kept_record()
    forget_acc_before, val_acc_before = before["forget_acc"], before["val_acc"]
    forget_acc_after, val_acc_after = kept["forget_acc"], kept["val_acc"]

    stats_meta = {
        "stats_model_sha256": stats_model_sha,
        "state": request.id,
        "n_forgotten_total": int(stats_in.meta.get("n_forgotten_total", 0)) + len(forget),
    }
    for key in ("data_sha256", "excluded_sample_ids"):  # what the data check reads, carried
        if key in stats_in.meta:  # on so that it outlives R_full (`pgu-admin purge`)
            stats_meta[key] = stats_in.meta[key]
    layer_table = [{k: v for k, v in s.items() if k != "sigma"} for s in summary]
    files = {
        MODEL: model_to_bytes(out_model),
        RETAIN_STATS: tensors_to_bytes(r_retain, stats_meta),
        BASES: tensors_to_bytes(bases, {"request_id": request.id, "layers": layer_table}),
    }
    store.commit(request.id, files)

    # Deterministic report (no clock times), so DVC can check reproductions byte for byte.
    report_dir = Path(reports_root) / request.id
    loop = "depoison" if request.purpose == "depoison" else "unlearn"
    metrics = {
        "request_id": request.id,
        "kind": request.kind,
        "n_samples": len(forget),
        "classes": list(request.classes),
        "stop_reason": result.stop_reason,
        "epochs_run": result.epochs_run,
        "kept_epoch": result.kept_epoch,
        "forget_acc_before": forget_acc_before,
        "forget_acc_after": forget_acc_after,
        "val_acc_before": val_acc_before,
        "val_acc_after": val_acc_after,
        "layers": layer_table,
        "history": result.history,
        # the files it started from and wrote, as the ledger hashes them: this report is in git,
        # the ledger is not, so an auditor with the repository alone can tie the two together
        "sha256": {
            "request": request.sha256,
            "input_model": digests[MODEL],
            "input_stats": stats_in_sha,
            **{f"output_{k.split('.')[0]}": sha256_bytes(v) for k, v in files.items()},
        },
        # what the bytes depend on besides the inputs (README, "Determinism")
        "environment": {
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "device": torch.device(device).type,
        },
        # what a replay needs besides the files the ledger hashes: the settings of this run
        "parameters": {
            "cgs": cgs_params,
            loop: asdict(depoison_config if loop == "depoison" else config),
            "representation_batch_size": batch_size,
        },
    }
    atomic_write_bytes(report_dir / "metrics.json", json_bytes(metrics))  # NaN -> null
    curve = plots.unlearning_curve(result.history, request.id, result.kept_epoch)
    atomic_write_bytes(report_dir / "unlearning.png", plots.png_bytes(curve))
    order = list(tracked_layers(out_model))  # the model's layer order, not the file's
    spectrum = plots.spectra(summary, order=order)
    atomic_write_bytes(report_dir / "spectrum.png", plots.png_bytes(spectrum))

    row = {
        "request_id": request.id,
        "processed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "kind": request.kind,
        "n_samples": len(forget),
        "request_sha256": request.sha256,
        "ids_sha256": ids_digest(plan.forget_ids),
        "input_state": plan.after,
        "input_model_sha256": sha256_bytes(model_in_bytes),
        "input_stats_sha256": stats_in_sha,
        "stats_model_sha256": stats_model_sha,
        "output_stats_sha256": sha256_bytes(files[RETAIN_STATS]),
        "bases_sha256": sha256_bytes(files[BASES]),
        "output_model_sha256": sha256_bytes(files[MODEL]),
        "gamma": cgs_params["gamma"],
        "epochs_run": result.epochs_run,
        "stop_reason": result.stop_reason,
        "forget_acc_before": round(forget_acc_before, 6),
        "forget_acc_after": round(forget_acc_after, 6),
        "val_acc_before": round(val_acc_before, 6),
        "val_acc_after": round(val_acc_after, 6),
        "compute_seconds": round(compute_seconds, 3),
        "wall_seconds": round(time.perf_counter() - start, 3),
        "replay": replay,
    }
    append_row(ledger_path, row)
    logger.info(
        "%s: %d samples, %d epochs, stop %s; forget acc %.3f → %.3f, val acc %.3f → %.3f",
        request.id,
        len(forget),
        result.epochs_run,
        result.stop_reason,
        forget_acc_before,
        forget_acc_after,
        val_acc_before,
        val_acc_after,
    )
    return row


def _depoison(
    model: torch.nn.Module,
    r_retain: dict[str, torch.Tensor],
    forget: SampleSet,
    val: SampleSet,
    cgs_params: dict,
    config: DepoisonConfig,
    device: torch.device,
) -> tuple:
    """De-poison ``model`` on the request's samples with their stored (wrong) labels.

    The bases come from the retain statistics, which no longer hold the mislabelled samples
    (METHOD section 7: the clean data's CGS), the trust-region layer's as M itself. Every
    history record gains ``forget_acc``, the accuracy on the stored labels, so the report and
    the ledger read like an unlearning request's.

    Returns:
        (the ``DepoisonResult``, the bases, the per-layer summary).
    """
    tr_layer = config.trust_region_name(model)
    bases, summary = depoison_bases(
        r_retain,
        cgs_params["gamma"],
        cgs_params.get("overrides"),
        tr_layer,
        eigh_dtype=cgs_params.get("eigh_dtype", "float64"),
        device=device,
    )

    def forget_acc(m: torch.nn.Module) -> dict:
        return {"forget_acc": accuracy(predict_logits(m, forget, device=device), forget.y)}

    result = depoison(model, bases, forget, val, config, device=device, observe=forget_acc)
    return result, bases, summary
