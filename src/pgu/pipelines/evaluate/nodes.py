"""Nodes of the ``evaluate`` pipeline: a thin loop over ``pgu.core.audit.audit_request``."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pgu.core import plots
from pgu.core.audit import audit_request, check_baseline_params, check_shadow_params
from pgu.core.checkpoint import TensorBundle
from pgu.core.data import SampleSet, data_fingerprint
from pgu.core.deletion import (
    Workspace,
    check_data_unchanged,
    check_requests_unchanged,
    check_start_state,
    plan_requests,
)
from pgu.core.ledger import read_ledger
from pgu.core.requests import ORIGINAL, RequestError, load_requests
from pgu.core.retention import RETRAINED, purged_for_audit
from pgu.core.training import TrainRecipe, resolve_device
from pgu.core.unlearning import UnlearnConfig

logger = logging.getLogger(__name__)


def evaluate_requests(
    workspace: Workspace,
    samples: TensorBundle,
    index: pd.DataFrame,
    train_params: dict,
    unlearn_params: dict,
    params: dict,
) -> list[dict]:
    """Audit each processed request (or only ``evaluate.request_id``), in queue order.

    Returns:
        One evaluation summary per audited request (each also written to its report folder).
    """
    check_shadow_params(params)  # before any training
    check_baseline_params(params)
    data = SampleSet.from_tensors(samples.tensors)
    ledger = read_ledger(workspace.ledger_path)
    check_requests_unchanged(workspace.requests_dir, ledger)  # the plans come from these files
    processed = set(ledger["request_id"].astype(str))
    only = params.get("request_id")
    if only is not None and only not in processed:
        raise RequestError(f"request {only!r} has not been processed; run the unlearn pipeline")
    full = check_data_unchanged(
        workspace.states,
        data_fingerprint(samples.tensors, index),
        ledger["request_id"].astype(str).tolist(),
    )
    excluded = full.get("excluded_sample_ids", [])  # the original never trained on them either
    plans = plan_requests(
        load_requests(workspace.requests_dir), index, data.num_classes, set(), excluded=excluded
    )
    recipe = TrainRecipe.from_params(train_params["recipe"])
    config = UnlearnConfig.from_params(unlearn_params.get("config") or {})
    spec = workspace.states.load_model(ORIGINAL).pgu_spec
    device = resolve_device(params["device"])
    wanted = {p.request.id for p in plans if p.request.id in processed} if only is None else {only}
    if only is None:  # `pgu-admin purge` empties superseded states: those cannot be audited
        gone = sorted(
            p.request.id
            for p in plans
            if p.request.id in wanted and purged_for_audit(workspace.states, p.request.id, p.after)
        )
        if gone:
            logger.warning(
                "not audited: %s, whose states or evaluation models `pgu-admin purge` deleted "
                "(audit a request before purging it); the other processed requests are audited",
                gone,
            )
            wanted -= set(gone)
    read = {name for p in plans if p.request.id in wanted for name in (p.after, p.request.id)}
    for name in sorted(read):  # every state the audits read must be what the ledger records
        check_start_state(workspace.states, ledger, name)
    forgotten = np.asarray(excluded, dtype=np.int64)  # what the gold standard leaves out
    summaries = []
    for plan in plans:
        forgotten = np.union1d(forgotten, plan.forget_ids)
        rid = plan.request.id
        if rid not in wanted:
            continue
        row = ledger[ledger["request_id"].astype(str) == rid].iloc[-1].to_dict()
        gold_cache = workspace.states.root.parent / RETRAINED / rid
        summaries.append(
            audit_request(
                plan,
                forgotten,
                workspace,
                data,
                index,
                spec,
                recipe,
                params,
                config,
                row,
                gold_cache,
                device,
                class_names=samples.meta.get("classes") or (),
            )
        )
    if not summaries and processed:
        logger.warning("no processed request could be audited (see above)")
    elif not summaries:
        logger.warning("no processed request to evaluate; run `kedro run --pipelines unlearn`")
    return summaries


def plot_latest_audit(summaries: list[dict]) -> Figure:
    """Attack member rate per method for the last audited request (previewed in Kedro-Viz)."""
    if not summaries:
        return Figure()
    last = summaries[-1]
    rates = {name: row["mia_member_rate"] for name, row in last["models"].items()}
    return plots.method_bars(
        rates, "forget samples called member (%)", f"{last['request_id']}: membership inference"
    )
