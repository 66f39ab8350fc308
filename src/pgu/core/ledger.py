"""The append-only ledger: one row per processed deletion request.

It holds hashes (of the request file, of the sorted forgotten ids, of every model, statistics
and bases file read or written) and never the ids themselves, so an auditor can prove what was
served and what was removed without the ledger becoming a copy of the deleted data. Appends are
atomic (the new file replaces the old one in one rename) and refuse to rewrite earlier rows.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

from pgu.core.checkpoint import atomic_write_bytes

COLUMNS = [
    "request_id",
    "processed_at",
    "kind",
    "n_samples",
    "request_sha256",
    "ids_sha256",
    "input_state",
    "input_model_sha256",
    "input_stats_sha256",
    "stats_model_sha256",
    "output_stats_sha256",
    "bases_sha256",
    "output_model_sha256",
    "gamma",
    "epochs_run",
    "stop_reason",
    "forget_acc_before",
    "forget_acc_after",
    "val_acc_before",
    "val_acc_after",
    "compute_seconds",
    "wall_seconds",
    "replay",
]


class LedgerError(RuntimeError):
    """The ledger on disk is unreadable or would lose rows."""


def read_ledger(path: str | Path) -> pd.DataFrame:
    """The ledger's rows (an empty table with the right columns when there is none yet)."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=COLUMNS)
    _check_rows(path)
    try:
        table = pd.read_csv(path, dtype={"request_id": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LedgerError(
            f"{path} is not a readable ledger CSV ({exc}); restore it from backup"
        ) from exc
    missing = set(COLUMNS) - set(table.columns)
    if missing:
        raise LedgerError(f"{path} lacks ledger columns {sorted(missing)}")
    return table


def _check_rows(path: Path) -> None:
    """Refuse a ledger with an incomplete or extra-field row.

    pandas pads a short row with NaN, so a half-written last row (a truncated copy, a full
    disk) would read as a request with no hashes, and the next append would follow it.
    """
    data = path.read_bytes()
    if not data:  # append_row replaces the file whole, so it never leaves it empty
        raise LedgerError(
            f"{path} is empty (not even its header): restore it from your backup; delete it "
            "only if no request was ever processed"
        )
    fix = (
        "the ledger is append-only and every row is one whole CSV line: restore the file from "
        "your backup (never edit it by hand; it is in neither git nor DVC), then rerun"
    )
    if data and not data.endswith(b"\n"):
        raise LedgerError(f"{path}: the last row is incomplete (no line end); {fix}")
    try:
        rows = csv.reader(io.StringIO(data.decode()))
        header = next(rows, [])
        for row in rows:
            if len(row) != len(header):
                raise LedgerError(
                    f"{path}: line {rows.line_num} has {len(row)} fields, the header "
                    f"{len(header)}; {fix}"
                )
    except (csv.Error, UnicodeDecodeError) as exc:
        raise LedgerError(f"{path} is not a readable ledger CSV ({exc}); {fix}") from exc


def latest_rows(table: pd.DataFrame) -> dict[str, dict]:
    """Each request's last row (a replay supersedes the rows before it), by request id."""
    return {str(r["request_id"]): r for r in table.to_dict(orient="records")}


def append_row(path: str | Path, row: dict) -> pd.DataFrame:
    """Append one row atomically (old bytes + one CSV line) and return the whole ledger."""
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise LedgerError(f"unknown ledger fields {sorted(unknown)}")
    path = Path(path)
    read_ledger(path)  # refuse to append to a file that is not a ledger
    old = path.read_bytes() if path.is_file() else b""
    buf = io.StringIO()
    pd.DataFrame([row], columns=COLUMNS).to_csv(buf, index=False, header=not old)
    if old and not old.endswith(b"\n"):
        old += b"\n"
    atomic_write_bytes(path, old + buf.getvalue().encode())
    return read_ledger(path)
