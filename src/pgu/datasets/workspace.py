"""Kedro dataset for the deletion workspace: request queue, model states, reports, ledger.

Processing requests is incremental — each one starts from the state the previous one left and
must be committed before the next begins — so the nodes receive this workspace and commit each
request atomically through it, instead of returning one big output at the end of the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from pgu.core.ledger import read_ledger
from pgu.core.state import Workspace


class WorkspaceDataset(AbstractDataset):
    """Read-only handle on the deletion workspace (writes go through its atomic commits).

    Example catalog entry::

        workspace:
          type: pgu.datasets.WorkspaceDataset
          filepath: data                         # root; Kedro makes it absolute
          requests: 01_raw/deletion_requests     # the others are relative to the root
          states: 06_models/states
          reports: 08_reporting/requests
          ledger: 08_reporting/ledger.csv
    """

    def __init__(
        self,
        filepath: str,
        requests: str,
        states: str,
        reports: str,
        ledger: str,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        root = Path(filepath)
        self._paths = {
            "requests": str(root / requests),
            "states": str(root / states),
            "reports": str(root / reports),
            "ledger": str(root / ledger),
        }
        self.metadata = metadata

    def load(self) -> Workspace:
        return Workspace.at(**self._paths)

    def save(self, data: Any) -> None:
        raise DatasetError("the workspace is written through its atomic commits, not saved")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return dict(self._paths)

    def preview(self) -> str:
        """The ledger's last rows, for Kedro-Viz."""
        ledger = read_ledger(self._paths["ledger"])
        cols = ["request_id", "kind", "n_samples", "stop_reason", "output_model_sha256"]
        return json.dumps(ledger[cols].tail(10).to_dict(orient="records"), default=str)
