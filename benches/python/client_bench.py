"""The Python client against the Rust client and Feast's Python SDK, side by side in one run.

Each client reads the same 20 features (10 int64, 10 float64) of users drawn uniformly from
10,000, one call in flight, at batches of 1 and 100; they take turns case by case, for several
rounds, and the table gives the median of the rounds. The Python client is measured twice: with
`to_dict()` (values, statuses and event times) and with values only, which is what Feast's
`to_dict()` gives. Quiver's clients call one
`quiver serve` (release build) on the embedded store, every row in its cache; Feast reads its
SQLite online store in process, as its local provider does. Feast is measured only when
--feast-python names an interpreter that has it:

    cargo build --release -p quiver
    scripts/python.sh setup
    python3 -m venv /tmp/feast && /tmp/feast/bin/pip install feast==0.67.0
    target/python-venv/bin/python benches/python/client_bench.py \
        --feast-python /tmp/feast/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import quiver
from measure import measure, report

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parents[1]
FEATURES = [f"bench:f{i}" for i in range(10)] + [f"bench:g{i}" for i in range(10)]
PUSH_BATCH = 500


def rows(users: int, event_time: datetime) -> list[dict[str, Any]]:
    """The benchmark's rows: feature f_i of user u is u * (i + 1), g_i is u / (i + 1)."""
    return [
        {
            "user_id": user,
            "event_time": event_time,
            **{f"f{i}": user * (i + 1) for i in range(10)},
            **{f"g{i}": user / (i + 1) for i in range(10)},
        }
        for user in range(users)
    ]


def start_server(binary: Path, data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    definitions = HERE / "definitions"
    apply = [str(binary), "apply", "--dir", str(definitions), "--data-dir", str(data_dir)]
    subprocess.run(apply, check=True, capture_output=True)
    log = data_dir / "serve.log"
    command = [
        str(binary), "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
        "--metrics-addr", "127.0.0.1:0", "--log-format", "json",
        "--cache-ttl-ms", "3600000",
    ]  # fmt: skip
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, text=True)
    for _ in range(600):
        for line in log.read_text().splitlines():
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("message") == "serving":
                return process, f"http://{event['address']}"
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"quiver serve did not start:\n{log.read_text()}")


def load(url: str, table: list[dict[str, Any]]) -> None:
    """Pushes every row, then reads every user once so that all of them are cached."""
    with quiver.Client(url) as client:
        for start in range(0, len(table), PUSH_BATCH):
            client.write_features("bench", table[start : start + PUSH_BATCH])
        for start in range(0, len(table), PUSH_BATCH):
            users = [row["user_id"] for row in table[start : start + PUSH_BATCH]]
            client.get_online_features(FEATURES, entities={"user_id": users})


def load_feast(python: str, repo: Path, table: list[dict[str, Any]]) -> None:
    import pyarrow
    import pyarrow.parquet

    columns: dict[str, list[Any]] = {name: [row[name] for row in table] for name in table[0]}
    columns["event_timestamp"] = columns.pop("event_time")
    parquet = repo.parent / "bench_rows.parquet"
    pyarrow.parquet.write_table(pyarrow.table(columns), parquet)
    script = str(HERE / "feast_client.py")
    setup = [python, script, "setup", str(repo), str(parquet)]
    subprocess.run(setup, check=True, stdout=sys.stderr)  # Feast reports its materialization


def run_json(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def rust(url: str, batch: int, users: int, seconds: float) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(
        QUIVER_BENCH_SERVER=url,
        QUIVER_BENCH_FEATURES=",".join(FEATURES),
        QUIVER_BENCH_BATCH=str(batch),
        QUIVER_BENCH_USERS=str(users),
        QUIVER_BENCH_SECONDS=str(seconds),
    )
    command = ["cargo", "bench", "-q", "-p", "quiver-benches", "--bench", "client"]
    return run_json(command, env)


def python_client(
    url: str, batch: int, users: int, seconds: float, values_only: bool
) -> dict[str, Any]:
    command = [sys.executable, __file__, "measure", url, "--batch", str(batch)]
    command += ["--users", str(users), "--seconds", str(seconds)]
    return run_json(command + (["--values-only"] if values_only else []))


def feast(python: str, repo: Path, batch: int, users: int, seconds: float) -> dict[str, Any]:
    command = [python, str(HERE / "feast_client.py"), "measure", str(repo), "--batch", str(batch)]
    return run_json([*command, "--users", str(users), "--seconds", str(seconds)])


def measure_python(url: str, batch: int, users: int, seconds: float, values_only: bool) -> None:
    """The Python client's calls: `to_dict()` with statuses and event times, or with values only
    as Feast's `to_dict()` gives them."""
    name = "python, values" if values_only else "python"
    with quiver.Client(url) as client:

        def call(keys: list[int]) -> object:
            features = client.get_online_features(FEATURES, entities={"user_id": keys})
            if values_only:
                return features.to_dict(statuses=False, event_times=False)
            return features.to_dict()

        report(measure(name, call, batch, users, seconds))


def table_of(results: list[dict[str, Any]], batches: list[int], clients: list[str]) -> str:
    def median(client: str, batch: int, field: str) -> float:
        picked = [r[field] for r in results if r["client"] == client and r["batch"] == batch]
        return float(statistics.median(picked))

    peers = [peer for peer in ("rust", "feast") if peer in clients]
    pythons = [client for client in clients if client.startswith("python")]
    ratios = [(python, peer) for python in pythons for peer in peers]
    header = [f"{client} calls/s (p99 ms)" for client in clients]
    header += [f"{python} / {peer}" for python, peer in ratios]
    lines = ["| batch | " + " | ".join(header) + " |", "|---:|" + "---:|" * len(header)]
    for batch in batches:
        cells = [
            f"{median(c, batch, 'calls_per_second'):,.0f} ({median(c, batch, 'p99_us') / 1e3:.2f})"
            for c in clients
        ]
        cells += [
            f"{median(p, batch, 'calls_per_second') / median(q, batch, 'calls_per_second'):.2f}"
            for p, q in ratios
        ]
        lines.append(f"| {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "measure":
        parser = argparse.ArgumentParser()
        parser.add_argument("command")
        parser.add_argument("url")
        parser.add_argument("--batch", type=int, required=True)
        parser.add_argument("--users", type=int, required=True)
        parser.add_argument("--seconds", type=float, required=True)
        parser.add_argument("--values-only", action="store_true")
        args = parser.parse_args()
        measure_python(args.url, args.batch, args.users, args.seconds, args.values_only)
        return
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_binary = REPOSITORY / "target" / "release" / "quiver"
    parser.add_argument("--quiver-bin", type=Path, default=default_binary)
    parser.add_argument("--feast-python", help="a Python interpreter with feast installed")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=3.0, help="counted seconds per case")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", default="1,100")
    args = parser.parse_args()
    batches = [int(batch) for batch in args.batches.split(",")]
    table = rows(args.users, datetime.now(timezone.utc) - timedelta(minutes=1))
    with tempfile.TemporaryDirectory() as scratch:
        server, url = start_server(args.quiver_bin, Path(scratch))
        try:
            load(url, table)
            if args.feast_python:
                load_feast(args.feast_python, Path(scratch) / "feast", table)
            results = []
            for round_ in range(args.rounds):
                for batch in batches:
                    results.append(rust(url, batch, args.users, args.seconds))
                    for values_only in (False, True):
                        python = python_client(url, batch, args.users, args.seconds, values_only)
                        results.append(python)
                    if args.feast_python:
                        repo = Path(scratch) / "feast"
                        results.append(
                            feast(args.feast_python, repo, batch, args.users, args.seconds)
                        )
                    print(f"round {round_ + 1}, batch {batch}: {results[-1]}", file=sys.stderr)
        finally:
            server.terminate()
            server.wait(timeout=30)
    clients = ["rust", "python", "python, values"] + (["feast"] if args.feast_python else [])
    print(table_of(results, batches, clients))


if __name__ == "__main__":
    main()
