"""Generates the gRPC stubs in src/quiver/v1 from proto/quiver/v1, or checks that they match.

    python scripts/generate_protos.py          # rewrite the stubs
    python scripts/generate_protos.py --check  # exit 1 if they differ from a fresh generation

The generators are pinned in pyproject.toml (the `dev` extra), so the same proto always gives
the same files.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PYTHON_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = PYTHON_ROOT.parent / "proto"
STUBS = PYTHON_ROOT / "src" / "quiver" / "v1"
GENERATED = (
    "feature_service_pb2.py",
    "feature_service_pb2.pyi",
    "feature_service_pb2_grpc.py",
    "feature_service_pb2_grpc.pyi",
)


def generate(into: Path) -> None:
    """Runs protoc with the Python, gRPC and mypy plugins, writing under `into`."""
    protos = sorted(str(path) for path in (PROTO_ROOT / "quiver" / "v1").glob("*.proto"))
    arguments = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={into}",
        f"--grpc_python_out={into}",
        f"--mypy_out={into}",
        f"--mypy_grpc_out={into}",
        *protos,
    ]
    # protoc finds the mypy plugins on PATH: they sit beside this interpreter, in its venv.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    if protoc.main(arguments) != 0:
        raise SystemExit("protoc failed; see its message above")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare instead of writing; exit 1 on a difference"
    )
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch) / "quiver" / "v1"
        generate(Path(scratch))
        if arguments.check:
            stale = [
                name
                for name in GENERATED
                if not (STUBS / name).exists()
                or not filecmp.cmp(fresh / name, STUBS / name, shallow=False)
            ]
            if stale:
                print(
                    f"stale gRPC stubs in {STUBS}: {', '.join(stale)}; "
                    "run python/scripts/generate_protos.py",
                    file=sys.stderr,
                )
                return 1
            print(f"the gRPC stubs in {STUBS} match the proto")
            return 0
        for name in GENERATED:
            shutil.copyfile(fresh / name, STUBS / name)
        print(f"wrote {len(GENERATED)} files to {STUBS}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
