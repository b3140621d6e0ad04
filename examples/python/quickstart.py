"""Read the quickstart's features into a DataFrame, then push a value and read it back.

Start the quickstart server first (`cargo run --profile quickstart -- quickstart`), then:

    pip install "./python[pandas]"
    python examples/python/quickstart.py [--server http://127.0.0.1:50051]
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

import pandas

import quiver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:50051", help="the Quiver server")
    arguments = parser.parse_args()
    pandas.set_option("display.width", 160)
    pandas.set_option("display.max_columns", 8)

    with quiver.Client(arguments.server) as client:
        # Feature service ranker_v1 for users 1 to 100, one row per user.
        users = list(range(1, 101))
        features = client.get_online_features(service="ranker_v1", entities={"user_id": users})
        frame = features.to_pandas(statuses=False, event_times=False)
        print(f"ranker_v1 for {len(frame)} users:")
        print(frame.head(10))

        # Push a new country for user 42; the server's cache drops the row, so it reads back now.
        pushed = client.write_features(
            "user_profile",
            [{"user_id": 42, "country": "IS", "event_time": datetime.now(timezone.utc)}],
        )
        print(f"\npushed {pushed.rows_written} row")
        country = client.get_online_features(["user_profile:country"], entities={"user_id": [42]})
        print(country.to_pandas())


if __name__ == "__main__":
    main()
