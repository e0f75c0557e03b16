#!/usr/bin/env bash
# Build the local observability servers from source through the Go module proxy (once each):
# Jaeger (the v2 all-in-one, cmd/jaeger), Prometheus and promtool.
#
#   bash scripts/install_observability.sh [jaeger|prometheus|promtool|all]...   # default: all
#   bash scripts/install_observability.sh --installed promtool   # its path, exit 1 if not built
#
# Each lands in ~/.cache/mpp/observability/<name>-<version>/bin/<name> (or under
# $MPP_CACHE_DIR), outside the clone, so every clone and CI run shares one build. A finished
# build carries a stamp (the recipe below) and is reused at once; a build goes to a temporary
# folder first and is moved into place only after the binary answers `--version`, so an
# interrupted one is never used. Versions: MPP_JAEGER_VERSION, MPP_PROMETHEUS_VERSION.
#
# Each binary is built inside its own module's folder in the module cache, with that module's
# go.mod and go.sum (Jaeger's go.mod has a replace directive, which `go install pkg@version`
# refuses). Prometheus is built with the tags remove_all_sd,enable_kubernetes_sd (file and
# Kubernetes service discovery only) and without the web UI's assets (the query API stays).
# Cold builds on two cores: Prometheus about 12 minutes, Jaeger about 11, promtool under a
# minute after Prometheus (they share most packages). Progress lines go to stderr.
set -euo pipefail

jaeger_version="${MPP_JAEGER_VERSION:-v1.75.0}"
prometheus_version="${MPP_PROMETHEUS_VERSION:-v0.316.0}"
cache="${MPP_CACHE_DIR:-$HOME/.cache/mpp}/observability"
recipe="1"
prom_tags="remove_all_sd,enable_kubernetes_sd"

log() { printf '[install_observability] %s\n' "$*" >&2; }

version_of() {
  case "$1" in
    jaeger) printf '%s\n' "$jaeger_version" ;;
    prometheus | promtool) printf '%s\n' "$prometheus_version" ;;
    *) return 1 ;;
  esac
}

home_of() { printf '%s/%s-%s\n' "$cache" "$1" "$(version_of "$1")"; }

# A build is complete when its stamp holds this recipe and the binary is executable.
installed() {
  local home
  home="$(home_of "$1")"
  [ -x "$home/bin/$1" ] && [ "$(cat "$home/.complete" 2>/dev/null)" = "$recipe" ]
}

usage() {
  log "usage: $0 [jaeger|prometheus|promtool|all]... | --installed NAME"
  exit 2
}

if [ "${1:-}" = "--installed" ]; then
  [ $# -eq 2 ] && version_of "$2" >/dev/null || usage
  if installed "$2"; then
    printf '%s/bin/%s\n' "$(home_of "$2")" "$2"
    exit 0
  fi
  log "$2 $(version_of "$2") is not built: run bash scripts/install_observability.sh $2"
  exit 1
fi

names=()
for arg in "${@:-all}"; do
  case "$arg" in
    all) names+=(prometheus promtool jaeger) ;;
    jaeger | prometheus | promtool) names+=("$arg") ;;
    *) usage ;;
  esac
done

# The module's folder in the module cache (downloaded on first use).
module_dir() {
  local info dir
  if ! info="$(GOTOOLCHAIN=local go mod download -json "$1@$2" 2>&1)"; then
    log "cannot fetch $1@$2 from the module proxy:"
    printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Error": "\(.*\)",\{0,1\}$/  \1/p' >&2
    return 1
  fi
  dir="$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  [ -d "$dir" ] || {
    log "go mod download gave no folder for $1@$2"
    return 1
  }
  printf '%s\n' "$dir"
}

build() {
  local name="$1" version home module pkg tags="" ldflags dir tmp start status
  version="$(version_of "$name")"
  home="$(home_of "$name")"
  if installed "$name"; then
    log "$name $version already built: $home/bin/$name"
    return 0
  fi
  case "$name" in
    jaeger)
      module=github.com/jaegertracing/jaeger
      pkg=./cmd/jaeger
      ldflags="-s -w -X $module/internal/version.latestVersion=$version"
      ;;
    prometheus | promtool)
      module=github.com/prometheus/prometheus
      pkg="./cmd/$name"
      tags="$prom_tags"
      ;;
  esac
  command -v go >/dev/null 2>&1 || {
    log "go is not on PATH: install Go 1.26 or newer ($name is built from source here)"
    return 1
  }
  log "fetching $module@$version"
  dir="$(module_dir "$module" "$version")" || return 1
  if [ "$module" = github.com/prometheus/prometheus ]; then
    local v common=github.com/prometheus/common/version
    v="$(cat "$dir/VERSION" 2>/dev/null || printf '%s' "$version")"
    ldflags="-s -w -X $common.Version=$v -X $common.Revision=$version -X $common.Branch=module"
    ldflags="$ldflags -X $common.BuildUser=mpp"
  fi
  mkdir -p "$cache"
  tmp="$(mktemp -d "$cache/.$name-$version.XXXXXX")"
  # An interrupted build leaves nothing behind.
  trap 'rm -rf "$tmp"; exit 130' INT TERM
  chmod 755 "$tmp"
  mkdir "$tmp/bin"
  log "building $name $version with $(go version | cut -d' ' -f3)${tags:+ (tags $tags)}"
  start=$SECONDS
  set +e
  (cd "$dir" && GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
    go build -v -trimpath ${tags:+-tags "$tags"} -ldflags "$ldflags" -o "$tmp/bin/$name" "$pkg") 2>&1 |
    while IFS= read -r line; do printf '[install_observability] %s:   %s\n' "$name" "$line" >&2; done
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ] || ! "$tmp/bin/$name" --version >/dev/null 2>&1; then
    log "$name: go build failed (exit $status); nothing was installed"
    rm -rf "$tmp"
    return 1
  fi
  printf '%s\n' "$recipe" >"$tmp/.complete"
  # Another run may have finished meanwhile: keep whichever landed first.
  if installed "$name"; then
    log "$name $version appeared meanwhile at $home; keeping it"
    rm -rf "$tmp"
  else
    rm -rf "$home"
    mv "$tmp" "$home"
  fi
  trap - INT TERM
  log "$name $version ready in $((SECONDS - start))s: $home/bin/$name"
}

failed=()
for name in "${names[@]}"; do
  build "$name" || failed+=("$name")
done
if [ ${#failed[@]} -gt 0 ]; then
  log "failed: ${failed[*]}"
  exit 1
fi
