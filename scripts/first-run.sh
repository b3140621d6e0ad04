#!/usr/bin/env bash
# Times what a newcomer waits: a fresh clone of this repository's HEAD, then the README's
# quickstart command, until the quickstart prints its first served feature. The cargo registry
# cache (~/.cargo/registry) is used as it is, so run it once before to time a warm cache; the
# build starts from an empty target folder. The clone is deleted afterwards.
#
#   scripts/first-run.sh [CARGO-PROFILE]     # quickstart by default; release to compare
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=${1:-quickstart}
unset CARGO_TARGET_DIR
clone=$(mktemp -d)
started=$(date +%s)
git clone --quiet . "$clone"
cd "$clone"
cargo run --quiet -p quiver --profile "$profile" -- quickstart \
  --listen 127.0.0.1:0 --metrics-addr 127.0.0.1:0 > quickstart.out 2>&1 &
quickstart=$!
trap 'kill "$quickstart" 2>/dev/null || true; pkill -f "$clone/target" 2>/dev/null || true; rm -rf "$clone"' EXIT
until grep -q "user_id=42 " quickstart.out 2>/dev/null; do
  if ! kill -0 "$quickstart" 2>/dev/null; then
    cat quickstart.out >&2
    echo "the quickstart stopped before serving" >&2
    exit 1
  fi
  sleep 1
done
echo "profile $profile: first feature served $(( $(date +%s) - started )) s after the clone"
