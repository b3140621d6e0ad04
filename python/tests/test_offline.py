"""Training data from the offline log: `quiver.historical_features`, and the as-of join of
docs/offline.md in DuckDB giving what `quiver historical` gives for a stored feature."""

from __future__ import annotations

import csv
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import quiver

from .conftest import REPOSITORY, quiver_binary, start_server, stop_server
from .values import EVERY_TYPE, row, sample

# The sample's profile updates happen from this instant on, one user a second, some an hour later.
SAMPLE_START = datetime.fromtimestamp(1_790_000_000, tz=UTC)


def run_quiver(*args: str) -> str:
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


def profiles_logged(folder: Path) -> Path:
    """The sample's profile updates ingested with an offline log in `folder/log`."""
    data, log = folder / "data", folder / "log"
    run_quiver("apply", "--dir", str(REPOSITORY / "examples" / "features"), "--data-dir", str(data))
    events = REPOSITORY / "examples" / "events"
    run_quiver(
        "ingest",
        "--from-file",
        str(events / "user_profiles.avro"),
        "--data-dir",
        str(data),
        "--offline-log",
        str(log),
    )
    return log


def test_historical_features_reads_rows_from_arrow(tmp_path: Path) -> None:
    log = profiles_logged(tmp_path)
    later = SAMPLE_START + timedelta(hours=2)
    rows = pa.table(
        {
            "user_id": pa.array([3, 3, 4, 10_000], pa.int64()),
            "timestamp": pa.array(
                [SAMPLE_START, later, later, later], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    table = quiver.historical_features(
        rows,
        features=["user_profile:photo_count", "user_profile:verified"],
        offline_log=log,
        binary=quiver_binary(),
    )
    assert table.column_names[:2] == ["user_id", "timestamp"]
    statuses = table.column("user_profile:photo_count__status").to_pylist()
    # User 3's first profile comes 3 s after the start; user 10000 has none.
    assert statuses == ["not_found", "ok", "ok", "not_found"]
    assert table.schema.field("user_profile:photo_count").type == pa.int32()
    assert table.schema.field("user_profile:verified").type == pa.bool_()


def test_historical_features_says_what_was_refused(tmp_path: Path) -> None:
    log = profiles_logged(tmp_path)
    rows = pa.table({"user_id": [1], "at": pa.array([SAMPLE_START], pa.timestamp("us"))})
    with pytest.raises(quiver.HistoricalError, match="no column `timestamp`"):
        quiver.historical_features(
            rows, service="ranker_v1", offline_log=log, binary=quiver_binary()
        )
    with pytest.raises(ValueError, match="either service= or features="):
        quiver.historical_features(rows, offline_log=log, binary=quiver_binary())


def test_the_documented_duckdb_as_of_join_matches_quiver_historical(tmp_path: Path) -> None:
    log = profiles_logged(tmp_path)
    entity_rows = tmp_path / "rows.csv"
    with entity_rows.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["user_id", "timestamp"])
        for user in range(1, 61):
            for seconds in (0, user, user + 1, 1_800, 3_600 + user, 7_200):
                at = SAMPLE_START + timedelta(seconds=seconds, milliseconds=500)
                writer.writerow([user, at.isoformat()])
    out = tmp_path / "training.parquet"
    run_quiver(
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


def test_pushed_rows_of_every_type_come_back_from_the_log(tmp_path: Path) -> None:
    log = tmp_path / "log"
    server = start_server(tmp_path / "data", "--offline-log", str(log))
    try:
        users = list(range(1, 13))
        pushed_at = datetime.now(UTC) - timedelta(minutes=1)
        with quiver.Client(server.url) as client:
            written = client.write_features("every_type", [row(user, pushed_at) for user in users])
        assert written.rows_written == len(users)
    finally:
        stop_server(server)
    times = [pushed_at - timedelta(seconds=1)] + [pushed_at] * len(users)
    rows = pa.table(
        {
            "user_id": pa.array([1, *users], pa.int64()),
            "timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
        }
    )
    table = quiver.historical_features(
        rows,
        features=[f"every_type:{name}" for name, _ in EVERY_TYPE],
        offline_log=log,
        binary=quiver_binary(),
    ).to_pylist()
    assert all(table[0][f"every_type:{name}"] is None for name, _ in EVERY_TYPE), "before"
    for user, answer in zip(users, table[1:], strict=True):
        for name, feature_type in EVERY_TYPE:
            assert answer[f"every_type:{name}"] == sample(feature_type, user), (user, name)
            assert answer[f"every_type:{name}__event_time"] == pushed_at, (user, name)
