#!/usr/bin/env bash
# The Python client (python/): its virtual environment, type check and tests.
#
#   scripts/python.sh setup   create target/python-venv and install ./python, editable, with its
#                             dev extra (pinned: pytest, mypy, the stub generators); again only
#                             when python/pyproject.toml changed
#   scripts/python.sh check   ruff (format and lints) and mypy --strict on the package, its
#                             tests, example and benchmark
#   scripts/python.sh test    pytest, against a real `quiver serve` on the embedded store: the
#                             debug binary that `cargo test --workspace` builds (built here the
#                             same way, so after `cargo test` it is not built again); one test
#                             checks the generated gRPC stubs against proto/
#
# QUIVER_PYTHON picks the interpreter that makes the venv (python3 by default, 3.10 or newer).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=target/python-venv
stamp="$venv/.installed-from"

setup() {
  local wanted
  wanted=$(sha256sum python/pyproject.toml | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    return
  fi
  rm -rf "$venv"
  "${QUIVER_PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet --editable "./python[dev]"
  echo "$wanted" > "$stamp"
}

case "${1:-}" in
  setup)
    setup
    ;;
  check)
    setup
    python_code=(python examples/python benches/python)
    "$venv/bin/ruff" format --check --config python/pyproject.toml "${python_code[@]}"
    "$venv/bin/ruff" check --config python/pyproject.toml "${python_code[@]}"
    (cd python && "../$venv/bin/mypy")
    ;;
  test)
    setup
    # The same build as `cargo test --workspace`: another package selection would unify other
    # dependency features and compile the binary again.
    cargo test --quiet --workspace --no-run
    (cd python && "../$venv/bin/pytest" -q)
    ;;
  *)
    sed -n '2,13p' "$0" >&2
    exit 2
    ;;
esac
