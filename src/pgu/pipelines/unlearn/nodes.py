"""Nodes of the ``unlearn`` pipeline: a thin loop over ``pgu.core.deletion.execute_request``."""

from __future__ import annotations

import logging

import pandas as pd

from pgu.core.checkpoint import TensorBundle
from pgu.core.data import SampleSet
from pgu.core.deletion import (
    RequestPlan,
    Workspace,
    check_no_lost_rows,
    check_not_purged,
    check_requests_unchanged,
    clean_leftovers,
    execute_request,
    stale_after,
)
from pgu.core.depoisoning import DepoisonConfig
from pgu.core.ledger import latest_rows, read_ledger
from pgu.core.training import resolve_device
from pgu.core.unlearning import UnlearnConfig

logger = logging.getLogger(__name__)


def process_requests(
    plans: list[RequestPlan],
    workspace: Workspace,
    samples: TensorBundle,
    index: pd.DataFrame,
    cgs_params: dict,
    unlearn_params: dict,
    representation_params: dict,
    depoison_params: dict,
) -> list[dict]:
    """Process each planned request in order; each is committed before the next starts.

    Requests with ``purpose: depoison`` run the de-poisoning loop with ``depoison.config``.

    Returns:
        The ledger rows written by this run.
    """
    for line in clean_leftovers(workspace):
        logger.warning("%s", line)
    ledger = read_ledger(workspace.ledger_path)
    # before anything is written: the ids planned as already forgotten come from these files
    check_requests_unchanged(workspace.requests_dir, ledger)
    data = SampleSet.from_tensors(samples.tensors)
    config = UnlearnConfig.from_params(unlearn_params.get("config") or {})
    depoison_config = DepoisonConfig.from_params(depoison_params.get("config") or {})
    device = resolve_device(unlearn_params["device"])
    cuda_graph = unlearn_params.get("cuda_graph", False)
    if not isinstance(cuda_graph, bool):
        raise ValueError(
            f"parameters_unlearn.yml: unlearn.cuda_graph must be true or false, got {cuda_graph!r}"
        )
    done = latest_rows(ledger)
    check_no_lost_rows(workspace.states, plans, done)
    check_not_purged(workspace.states, plans, done)
    rows = []
    for plan in plans:
        rows.append(
            execute_request(
                plan,
                workspace.states,
                data,
                index,
                cgs_params,
                config,
                workspace.reports_root,
                workspace.ledger_path,
                device,
                batch_size=representation_params["batch_size"],
                replay=plan.request.id in done,
                depoison_config=depoison_config,
                cuda_graph=cuda_graph,
            )
        )
        for rid in stale_after(plan.request.id, done, rows[-1]):
            logger.warning(
                "%s was replayed with another result than the one %s was processed from: %s and "
                "every processed request after it are stale until replayed in queue order (`dvc "
                "repro` does so); no request can start from them before that",
                plan.request.id,
                rid,
                rid,
            )
    if not rows:
        logger.info("no pending deletion request; file one with `pgu-admin file-request`")
    return rows
