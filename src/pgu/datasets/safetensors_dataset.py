"""Kedro datasets that store tensors and models as safetensors files.

``TensorBundleDataset`` holds named tensors plus JSON metadata (sample bundles, representation
matrices, bases). ``ModelDataset`` holds an ``nn.Module`` built from the model registry: the file
carries the architecture's spec, so loading needs no Python objects and no pickle. Both write
atomically, so a crash never leaves a half-written file behind, and only on rank 0 of a
``torchrun`` launch (``pgu.core.distributed.is_main_process``): the other processes compute the
same outputs and must not race rank 0 for the file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError
from torch import Tensor, nn

from pgu.core import distributed
from pgu.core.checkpoint import (
    RESTORE_HINT,
    CheckpointError,
    TensorBundle,
    atomic_write_bytes,
    model_from_bytes,
    model_to_bytes,
    stale_temporaries,
    tensors_from_bytes,
    tensors_to_bytes,
)

logger = logging.getLogger(__name__)


def missing_file_error(path: str | Path, made_by: str | None) -> DatasetError:
    """The error for an input file that is not there: which command writes it."""
    if made_by is None:
        return DatasetError(f"{path} does not exist; run the pipeline that produces it first")
    return DatasetError(
        f"{path} does not exist; `{made_by}` writes it: run that first (with this run's --env, "
        "if it has one), or `dvc checkout` it if DVC tracks it"
    )


class _SafetensorsFile(AbstractDataset):
    def __init__(
        self, filepath: str, metadata: dict[str, Any] | None = None, *, made_by: str | None = None
    ) -> None:
        """``made_by``: the command that writes the file, named when it is missing."""
        self._filepath = PurePosixPath(filepath)
        self._made_by = made_by
        self.metadata = metadata

    def _read(self) -> bytes:
        path = Path(self._filepath)
        if not path.is_file():
            raise missing_file_error(path, self._made_by)
        return path.read_bytes()

    def _write(self, data: bytes) -> None:
        # No barrier here: a collective inside save() deadlocks as soon as the processes do not
        # all save the same datasets (pgu.hooks swaps outputs for in-memory datasets on ranks
        # other than 0 and synchronises once, after the run).
        if distributed.is_main_process():
            for stale in stale_temporaries(self._filepath):  # a killed earlier write's
                stale.unlink(missing_ok=True)
                logger.info("removed %s (a killed run's temporary file)", stale)
            atomic_write_bytes(self._filepath, data)

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class TensorBundleDataset(_SafetensorsFile):
    """Named tensors and metadata in one safetensors file.

    Example catalog entry::

        representation_full:
          type: pgu.datasets.TensorBundleDataset
          filepath: data/06_models/states/original/retain_stats.safetensors
    """

    def load(self) -> TensorBundle:
        try:
            tensors, meta = tensors_from_bytes(self._read(), what=str(self._filepath))
        except CheckpointError as exc:
            reason = str(exc).removesuffix(f"; {RESTORE_HINT}")  # a more precise fix follows
            raise DatasetError(
                f"{reason}. The file is corrupt or was not written by pgu: restore it with "
                "`dvc checkout`, or delete it and rerun the pipeline that writes it (samples: "
                "`kedro run --pipelines data`; an original model's statistics: `--pipelines "
                "representation`; the poisoned model's: `--pipelines depoison --tags poison`)."
            ) from exc
        return TensorBundle(tensors, meta)

    def save(self, data: TensorBundle | dict[str, Tensor]) -> None:
        bundle = data if isinstance(data, TensorBundle) else TensorBundle(dict(data))
        self._write(tensors_to_bytes(bundle.tensors, bundle.meta))

    def preview(self) -> str:
        """Tensor names and shapes, for Kedro-Viz."""
        bundle = self.load()
        return json.dumps(
            {
                "tensors": {k: list(v.shape) for k, v in bundle.tensors.items()},
                "meta": {k: v for k, v in bundle.meta.items() if not isinstance(v, list | dict)},
            }
        )


class ModelDataset(_SafetensorsFile):
    """A registry model (``pgu.core.models``) with its spec in the safetensors header.

    Example catalog entry::

        original_model:
          type: pgu.datasets.ModelDataset
          filepath: data/06_models/states/original/model.safetensors
    """

    def load(self) -> nn.Module:
        try:
            return model_from_bytes(self._read(), what=str(self._filepath))
        except CheckpointError as exc:
            reason = str(exc).removesuffix(f"; {RESTORE_HINT}")  # a more precise fix follows
            raise DatasetError(
                f"{reason}. The model file is corrupt or was not written by pgu: restore it with "
                "`dvc checkout`, or delete it and rerun the pipeline that writes it (the "
                "original model: `kedro run --pipelines train`; the poisoned and clean models: "
                "`kedro run --pipelines depoison --tags poison`; the de-poisoned model: "
                "`--tags depoison`)."
            ) from exc

    def save(self, data: nn.Module) -> None:
        self._write(model_to_bytes(data))

    def preview(self) -> str:
        """The model's spec and parameter count, for Kedro-Viz."""
        model = self.load()
        n = sum(p.numel() for p in model.parameters())
        return json.dumps({"spec": model.pgu_spec, "parameters": n})
