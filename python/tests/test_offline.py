"""The offline log read by DuckDB, with the as-of join of docs/offline.md, gives what
`quiver historical` gives for a stored feature."""

from __future__ import annotations

import csv
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from .conftest import REPOSITORY, quiver_binary

# The sample's profile updates happen from this instant on, one user a second, some an hour later.
SAMPLE_START = datetime.fromtimestamp(1_790_000_000, tz=UTC)


def quiver(*args: str) -> str:
    result = subprocess.run(
        [str(quiver_binary()), *args], check=True, capture_output=True, text=True
    )
    return result.stdout


def documented_query() -> str:
    """The DuckDB query in docs/offline.md."""
    text = (REPOSITORY / "docs" / "offline.md").read_text()
    queries = re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL)
    duckdb_queries = [query for query in queries if "ASOF" in query]
    assert len(duckdb_queries) == 1, "docs/offline.md has one DuckDB as-of join"
    return str(duckdb_queries[0])


def test_the_documented_duckdb_as_of_join_matches_quiver_historical(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "log"
    quiver("apply", "--dir", str(REPOSITORY / "examples" / "features"), "--data-dir", str(data))
    events = REPOSITORY / "examples" / "events"
    quiver(
        "ingest",
        "--from-file",
        str(events / "user_profiles.avro"),
        "--data-dir",
        str(data),
        "--offline-log",
        str(log),
    )
    entity_rows = tmp_path / "rows.csv"
    with entity_rows.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["user_id", "timestamp"])
        for user in range(1, 61):
            for seconds in (0, user, user + 1, 1_800, 3_600 + user, 7_200):
                at = SAMPLE_START + timedelta(seconds=seconds, milliseconds=500)
                writer.writerow([user, at.isoformat()])
    out = tmp_path / "training.parquet"
    quiver(
        "historical",
        "--feature",
        "user_profile:country",
        "--entities",
        str(entity_rows),
        "--out",
        str(out),
        "--offline-log",
        str(log),
    )
    historical = pq.read_table(out).to_pylist()

    query = documented_query().replace("LOG", str(log)).replace("ROWS", str(entity_rows))
    relation = duckdb.sql(query)
    assert relation is not None, "the query returns rows"
    joined = relation.to_arrow_table().to_pylist()

    assert len(joined) == len(historical) == 360
    found = sum(1 for row in historical if row["user_profile:country"] is not None)
    assert 0 < found < len(historical), "rows before and after the users' first profiles"
    for ours, theirs in zip(historical, joined, strict=True):
        assert int(ours["user_id"]) == theirs["user_id"]
        for column in ("user_profile:country", "user_profile:country__event_time"):
            assert ours[column] == theirs[column], (ours, theirs)
