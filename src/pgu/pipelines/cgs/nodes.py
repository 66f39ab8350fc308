"""Nodes of the ``cgs`` pipeline: validate the queue and derive a request's bases, read-only."""

from __future__ import annotations

import logging

import pandas as pd
from matplotlib.figure import Figure

from pgu.core import plots
from pgu.core.cgs import bases_from_params, retain_statistics
from pgu.core.checkpoint import TensorBundle
from pgu.core.data import SampleSet, data_fingerprint
from pgu.core.deletion import (
    RequestPlan,
    Workspace,
    check_data_unchanged,
    check_start_state,
    plan_requests,
)
from pgu.core.ledger import read_ledger
from pgu.core.representation import collect_representations, tracked_layers
from pgu.core.requests import ORIGINAL, load_requests
from pgu.core.training import resolve_device

logger = logging.getLogger(__name__)


def plan_pending_requests(
    workspace: Workspace, samples: TensorBundle, index: pd.DataFrame, params: dict
) -> list[RequestPlan]:
    """Validate every queued request against the sample index and list the ones to process.

    Refuses first a sample bundle or index that is not the data the original's statistics
    were collected over (:func:`pgu.core.deletion.check_data_unchanged`).

    Args:
        workspace: the deletion workspace.
        samples: the sample bundle (for the number of classes and the data fingerprint).
        index: the sample index table.
        params: ``unlearn`` parameters; ``request_id`` set → only that request (a replay).

    Returns:
        Plans in processing order; empty when every queued request is in the ledger.
    """
    processed = read_ledger(workspace.ledger_path)["request_id"].astype(str).tolist()
    # first: ids resolved against a rebuilt index would name other samples than R_full summed
    fingerprint = data_fingerprint(samples.tensors, index)
    full = check_data_unchanged(workspace.states, fingerprint, processed)
    requests = load_requests(workspace.requests_dir)
    done = set(processed)
    num_classes = int(samples.tensors["num_classes"])
    plans = plan_requests(
        requests,
        index,
        num_classes,
        done,
        only=params.get("request_id"),
        excluded=full.get("excluded_sample_ids", ()),
    )
    logger.info(
        "%d queued request(s), %d to process: %s",
        len(requests),
        len(plans),
        [p.request.id for p in plans],
    )
    return plans


def preview_bases(
    plans: list[RequestPlan],
    workspace: Workspace,
    samples: TensorBundle,
    cgs_params: dict,
    representation_params: dict,
) -> tuple[pd.DataFrame, Figure]:
    """The bases the first pending request would get: k_l / d per layer and the spectra.

    Nothing is written to the state store; R_forget stays in memory.
    """
    if not plans:
        logger.warning("no pending request: nothing to preview")
        return pd.DataFrame(columns=["layer", "d", "k", "k_over_d", "gamma", "frozen"]), Figure()
    plan = plans[0]
    # the preview starts where the request would: refuse a state the request would refuse
    check_start_state(workspace.states, read_ledger(workspace.ledger_path), plan.after)
    data = SampleSet.from_tensors(samples.tensors)
    stats = workspace.states.load_stats(plan.after)
    stats_model = workspace.states.load_model(ORIGINAL)
    forget = data.with_ids(plan.forget_ids)
    device = resolve_device(representation_params["device"])
    batches = forget.batches(representation_params["batch_size"])
    r_forget = collect_representations(stats_model, batches, device=device, keep_on_device=True)
    retain = retain_statistics(stats.tensors, r_forget, device=device)
    _, summary = bases_from_params(retain, cgs_params, device=device)
    table = pd.DataFrame([{k: v for k, v in s.items() if k != "sigma"} for s in summary])
    logger.info(
        "preview of %s (from state %s): k per layer %s; written as the catalog's cgs_table and "
        "cgs_spectrum (data/07_model_output/cgs_preview/ in conf/base)",
        plan.request.id,
        plan.after,
        {s["layer"]: s["k"] for s in summary},
    )
    order = list(tracked_layers(stats_model))  # the model's layer order, not the file's
    return table, plots.spectra(summary, title=f"{plan.request.id} retain statistics", order=order)
