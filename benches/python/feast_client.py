"""Feast's Python SDK in the client benchmark: a feature repository on its local provider
(SQLite online store, Parquet offline store) holding the same rows as Quiver, and the same
measuring loop around `get_online_features(...).to_dict()`.

Runs under an interpreter that has Feast (client_bench.py --feast-python):

    feast_client.py setup REPO ROWS.parquet
    feast_client.py measure REPO --batch N --users U --seconds S
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone
from pathlib import Path

from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

from measure import measure, report

FEATURES = [f"f{i}" for i in range(10)] + [f"g{i}" for i in range(10)]
STORE_YAML = """project: quiver_bench
registry: {repo}/registry.db
provider: local
online_store:
  type: sqlite
  path: {repo}/online.db
offline_store:
  type: file
entity_key_serialization_version: 3
"""


def definitions(rows: Path) -> tuple[Entity, FeatureView]:
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    source = FileSource(path=str(rows), timestamp_field="event_timestamp")
    schema = [Field(name=f"f{i}", dtype=Int64) for i in range(10)]
    schema += [Field(name=f"g{i}", dtype=Float64) for i in range(10)]
    view = FeatureView(
        name="bench", entities=[user], ttl=timedelta(days=3650), schema=schema, source=source
    )
    return user, view


def setup(repo: Path, rows: Path) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(STORE_YAML.format(repo=repo))
    store = FeatureStore(repo_path=str(repo))
    store.apply(list(definitions(rows)))
    now = datetime.now(timezone.utc)
    store.materialize(start_date=now - timedelta(days=3650), end_date=now)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    set_up = commands.add_parser("setup")
    set_up.add_argument("repo", type=Path)
    set_up.add_argument("rows", type=Path)
    run = commands.add_parser("measure")
    run.add_argument("repo", type=Path)
    run.add_argument("--batch", type=int, required=True)
    run.add_argument("--users", type=int, required=True)
    run.add_argument("--seconds", type=float, required=True)
    arguments = parser.parse_args()
    if arguments.command == "setup":
        setup(arguments.repo, arguments.rows)
        return
    store = FeatureStore(repo_path=str(arguments.repo))
    references = [f"bench:{name}" for name in FEATURES]

    def call(keys: list[int]) -> object:
        rows = [{"user_id": key} for key in keys]
        return store.get_online_features(features=references, entity_rows=rows).to_dict()

    report(measure("feast", call, arguments.batch, arguments.users, arguments.seconds))


if __name__ == "__main__":
    main()
