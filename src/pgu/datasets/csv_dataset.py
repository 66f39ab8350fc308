"""A CSV table that says which command writes it when it is missing (the sample index)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from kedro_datasets.pandas import CSVDataset

from pgu.datasets.safetensors_dataset import missing_file_error


class MadeByCSVDataset(CSVDataset):
    """``pandas.CSVDataset`` on a local file, with ``made_by``: the command that writes it.

    Example catalog entry::

        sample_index:
          type: pgu.datasets.MadeByCSVDataset
          filepath: data/02_intermediate/sample_index.csv
          made_by: kedro run --pipelines data
          save_args:
            index: false
    """

    def __init__(self, *, filepath: str, made_by: str | None = None, **kwargs: Any) -> None:
        super().__init__(filepath=filepath, **kwargs)
        self._made_by = made_by

    def load(self) -> pd.DataFrame:
        path = Path(str(self._filepath))
        if self._protocol == "file" and not path.is_file():  # remote stores keep fsspec's error
            raise missing_file_error(path, self._made_by)
        return super().load()
