"""Kedro hooks: run a pipeline as one of several processes started by ``torchrun``.

``torchrun --standalone --nproc_per_node=N -m pgu --pipelines representation`` starts N copies of
the whole Kedro session. Before the pipeline runs, :class:`DistributedHooks` joins them in a
process group (``pgu.core.distributed.init_from_env``), which the core then uses: training wraps
the model in DistributedDataParallel, representation matrices are collected in shared chunks.
Every process computes every node's outputs, but only rank 0 writes them: on the other ranks
each dataset the pipeline outputs is replaced by an in-memory one, so their downstream nodes
get their own (identical or equivalent) values and never read a file rank 0 may still be
writing. All processes meet once more after the run, then leave the group.

With one process (no ``WORLD_SIZE`` > 1 in the environment) the hooks do nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline

from pgu.core import distributed

logger = logging.getLogger(__name__)

# Nodes known to write only through the catalog (the data, train and representation pipelines).
# Others may write files themselves (the deletion workspace commits each request and appends to
# the ledger, audits write reports): under several processes every rank would, so a launch with
# any other node is refused rather than risk duplicated commits.
MULTI_PROCESS_NODES = frozenset(
    {
        "load_raw_data",
        "split_samples",
        "bundle_samples",
        "train_original",
        "evaluate_original",
        "plot_learning_curve",
        "collect_full_statistics",
    }
)


class DistributedHooks:
    """Process group and rank-0-only outputs for runs launched by ``torchrun``."""

    def __init__(self) -> None:
        self._owns_group = False

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: DataCatalog
    ) -> None:
        if distributed.launch_world_size() <= 1:
            return
        unsafe = sorted({node.name for node in pipeline.nodes} - MULTI_PROCESS_NODES)
        if unsafe:
            raise RuntimeError(
                f"nodes {unsafe} are not known to write only through the data catalog, so they "
                f"cannot run under {distributed.launch_world_size()} processes; run them without "
                "torchrun (multi-process runs: the data, train and representation pipelines)"
            )
        self._owns_group = distributed.init_from_env()
        if distributed.is_main_process():
            logger.info("rank 0 of %d writes the outputs", distributed.launch_world_size())
            return
        outputs = sorted(pipeline.all_outputs())
        catalog_logger = logging.getLogger("kedro.io.data_catalog")
        level = catalog_logger.level
        catalog_logger.setLevel(logging.ERROR)  # one line below instead of a warning per dataset
        try:
            for name in outputs:
                catalog[name] = MemoryDataset(copy_mode="assign")
        finally:
            catalog_logger.setLevel(level)
        logger.info(
            "rank %d of %d keeps its outputs in memory: %s",
            distributed.rank(),
            distributed.launch_world_size(),
            ", ".join(outputs),
        )

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline) -> None:
        distributed.barrier()  # rank 0 has written everything before anyone leaves
        self._close()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any]) -> None:
        self._close()  # no barrier: the other ranks may be stuck elsewhere; torchrun ends them

    def _close(self) -> None:
        if self._owns_group:
            distributed.shutdown()
            self._owns_group = False
