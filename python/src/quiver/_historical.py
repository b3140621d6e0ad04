"""Point-in-time training data from the offline log, through the `quiver historical` command."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from quiver._response import _require

if TYPE_CHECKING:
    import pyarrow as pa


class HistoricalError(RuntimeError):
    """`quiver historical` refused the request: its message names what was wrong."""


def historical_features(
    entity_rows: pa.Table | str | os.PathLike[str],
    *,
    service: str | None = None,
    features: Sequence[str] = (),
    offline_log: str | os.PathLike[str] = "quiver-data/offline-log",
    timestamp_column: str = "timestamp",
    binary: str | os.PathLike[str] | None = None,
) -> pa.Table:
    """Each feature of `service` (or each `view:feature` of `features`) at each row of
    `entity_rows`, as serving would have answered it at the row's timestamp, computed from the
    offline log by the same code serving uses.

    `entity_rows` is an Arrow table (`pyarrow.Table.from_pandas` makes one from a DataFrame) or
    a path to a Parquet or CSV file, with a column per entity key and `timestamp_column`. The
    result holds those columns, then per feature `view:feature`, `view:feature__event_time` and
    `view:feature__status`. `binary` is the `quiver` executable: `$QUIVER_BIN`, else `quiver`
    on the PATH.
    """
    _require("pyarrow", "arrow")
    import pyarrow.parquet as pq

    if (service is None) == (not features):
        raise ValueError("give either service= or features=, not both or neither")
    executable = _binary(binary)
    with tempfile.TemporaryDirectory(prefix="quiver-historical-") as folder:
        rows_path = Path(folder) / "rows.parquet"
        if isinstance(entity_rows, str | os.PathLike):
            rows_path = Path(entity_rows)
        else:
            pq.write_table(entity_rows, rows_path)
        out = Path(folder) / "training.parquet"
        selection = ["--service", service] if service is not None else []
        for feature in features:
            selection.extend(["--feature", feature])
        command = [
            executable,
            "historical",
            *selection,
            "--entities",
            str(rows_path),
            "--out",
            str(out),
            "--offline-log",
            os.fspath(offline_log),
            "--timestamp-column",
            timestamp_column,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise HistoricalError(result.stderr.strip().removeprefix("error: "))
        return pq.read_table(out)


def _binary(binary: str | os.PathLike[str] | None) -> str:
    """The `quiver` executable to run."""
    if binary is not None:
        return os.fspath(binary)
    from_environment = os.environ.get("QUIVER_BIN")
    if from_environment:
        return from_environment
    found = shutil.which("quiver")
    if found is None:
        raise FileNotFoundError(
            "no `quiver` executable: put it on the PATH, set QUIVER_BIN, or pass binary="
        )
    return found
