"""Fixtures: a real `quiver serve` on the embedded store, with the definitions in definitions/."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import quiver

REPOSITORY = Path(__file__).resolve().parents[2]
DEFINITIONS = Path(__file__).resolve().parent / "definitions"
STARTUP_SECONDS = 60.0


def quiver_binary() -> Path:
    """The `quiver` binary: $QUIVER_BIN, or the debug build that `cargo test` leaves."""
    binary = Path(os.environ.get("QUIVER_BIN", REPOSITORY / "target" / "debug" / "quiver"))
    if not binary.is_file():
        raise RuntimeError(
            f"no quiver binary at {binary}: run scripts/python.sh test, which builds it, "
            "or set QUIVER_BIN"
        )
    return binary


@dataclass
class Server:
    """A running `quiver serve`: its address and its log so far."""

    url: str
    process: subprocess.Popen[str]
    log: Path


def start_server(data_dir: Path, *extra: str) -> Server:
    """Applies the test definitions to an embedded store in `data_dir` and serves it on a free
    loopback port; returns once the server says where it listens."""
    binary = quiver_binary()
    subprocess.run(
        [str(binary), "apply", "--dir", str(DEFINITIONS), "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    log = data_dir / "serve.log"
    command = [
        str(binary),
        "serve",
        "--data-dir",
        str(data_dir),
        "--listen",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--log-format",
        "json",
        *extra,
    ]
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"quiver serve exited with {process.returncode}:\n{log.read_text()}")
        for line in log.read_text().splitlines():
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("message") == "serving" and "address" in event:
                return Server(f"http://{event['address']}", process, log)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(
        f"quiver serve did not listen within {STARTUP_SECONDS} s:\n{log.read_text()}"
    )


def stop_server(server: Server) -> None:
    server.process.terminate()
    server.process.wait(timeout=30)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the whole session; tests write entities of their own ids."""
    running = start_server(tmp_path_factory.mktemp("quiver"))
    yield running
    stop_server(running)


@pytest.fixture
def client(server: Server) -> Iterator[quiver.Client]:
    with quiver.Client(server.url) as connected:
        yield connected


@pytest.fixture
async def async_client(server: Server) -> AsyncIterator[quiver.AsyncClient]:
    async with quiver.AsyncClient(server.url) as connected:
        yield connected
