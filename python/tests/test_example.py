"""examples/python/quickstart.py against a real `quiver quickstart` prints its DataFrame."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPOSITORY, STARTUP_SECONDS, quiver_binary

SERVING = re.compile(r"Serving quiver\.v1\.FeatureService on (\S+),")


def test_the_notebook_example_prints_ranker_v1_for_100_users(tmp_path: Path) -> None:
    output = tmp_path / "quickstart.out"
    command = [
        str(quiver_binary()),
        "quickstart",
        "--data-dir",
        str(tmp_path / "data"),
        "--listen",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
    ]
    with output.open("w") as sink:
        quickstart = subprocess.Popen(
            command, cwd=REPOSITORY, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        address = wait_for_address(output, quickstart)
        example = subprocess.run(
            [
                sys.executable,
                str(REPOSITORY / "examples/python/quickstart.py"),
                "--server",
                address,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        quickstart.terminate()
        quickstart.wait(timeout=30)
    assert example.returncode == 0, example.stderr
    lines = example.stdout.splitlines()
    assert lines[0] == "ranker_v1 for 100 users:"
    header = lines[1].split()
    assert header[:2] == ["user_id", "user_activity:actions_1h"]
    assert [line.split()[1] for line in lines[2:12]] == [str(user) for user in range(1, 11)]
    assert "pushed 1 row" in example.stdout
    country = lines[-1].split()
    assert country[1:4] == ["42", "IS", "ok"], example.stdout


def wait_for_address(output: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        found = SERVING.search(output.read_text())
        if found:
            return f"http://{found.group(1)}"
        if process.poll() is not None:
            raise RuntimeError(
                f"the quickstart exited with {process.returncode}:\n{output.read_text()}"
            )
        time.sleep(0.1)
    raise RuntimeError(
        f"the quickstart did not serve within {STARTUP_SECONDS} s:\n{output.read_text()}"
    )
