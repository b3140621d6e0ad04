#!/usr/bin/env bash
# Installs the pinned tools that the Helm chart and Dockerfile tests run, into a cache outside
# the build tree (crates/quiver/tests/chart.rs finds them there):
#
#   helm        helm lint and helm template     (Go module proxy: helm.sh/helm/v3)
#   kube-score  static checks of the manifests  (Go module proxy: github.com/zegl/kube-score)
#   dockerfilelint  lints the Dockerfile        (npm)
#
#   scripts/tools.sh install   install what is missing or of another version (idempotent)
#   scripts/tools.sh dir       print the folder holding the tools
#
# Settings (environment):
#   QUIVER_TOOLS_DIR   where the tools go (default ${XDG_CACHE_HOME:-~/.cache}/quiver/tools)
# Needs Go 1.24 or newer and npm.
set -euo pipefail

helm_version=v3.22.0
kube_score_version=v1.20.0
dockerfilelint_version=1.8.0

tools_dir=${QUIVER_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/quiver/tools}
bin="$tools_dir/bin"

log() { printf '[tools] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Installs a Go command unless the stamp says this version is already there.
go_install() {
  local name=$1 package=$2 version=$3
  local stamp="$bin/.$name-$version"
  [ -x "$bin/$name" ] && [ -f "$stamp" ] && return 0
  command -v go >/dev/null || die "go is needed to install $name"
  log "installing $name $version"
  GOBIN="$bin" GOFLAGS=-buildvcs=false go install "$package@$version"
  rm -f "$bin/.$name-"*
  touch "$stamp"
}

install() {
  mkdir -p "$bin"
  go_install helm helm.sh/helm/v3/cmd/helm "$helm_version"
  go_install kube-score github.com/zegl/kube-score/cmd/kube-score "$kube_score_version"
  local stamp="$bin/.dockerfilelint-$dockerfilelint_version"
  if [ ! -f "$stamp" ]; then
    command -v npm >/dev/null || die "npm is needed to install dockerfilelint"
    log "installing dockerfilelint $dockerfilelint_version"
    npm install --silent --no-audit --no-fund --prefix "$tools_dir/npm" "dockerfilelint@$dockerfilelint_version"
    ln -sf "$tools_dir/npm/node_modules/.bin/dockerfilelint" "$bin/dockerfilelint"
    rm -f "$bin/.dockerfilelint-"*
    touch "$stamp"
  fi
  log "ready in $bin: helm $helm_version, kube-score $kube_score_version, dockerfilelint $dockerfilelint_version"
}

case "${1:-}" in
  install) install ;;
  dir) echo "$bin" ;;
  *) die "usage: scripts/tools.sh install|dir" ;;
esac
