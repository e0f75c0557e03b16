#!/usr/bin/env bash
# Build the local cluster's programs from the Go module proxy (once) and print their folder.
#
# Kubernetes (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy,
# kubectl), etcd, CoreDNS and a static `pause` program, each built with CGO_ENABLED=0 into
# ~/.cache/mpp/tools/cluster-<versions>-r<recipe>/bin (or $MPP_CACHE_DIR/tools/...), outside
# the clone: every clone and CI run shares one build. Kubernetes cannot be `go install`ed as a
# module (its go.mod replaces its ~33 staging modules with local paths), so a small module of
# ours requires k8s.io/kubernetes and replaces each staging module with its published v0.X.Y.
# The first build takes about 15 minutes on two cores (progress on stderr); a complete build
# (the stamp file) is reused as it is. Interrupted builds never land: the binaries go to a
# temporary folder and are moved into place at the end.
#
#   bash scripts/cluster/build.sh      # prints e.g. /root/.cache/mpp/tools/cluster-.../bin
set -euo pipefail

k8s="${MPP_K8S_VERSION:-v1.37.2}"
etcd="${MPP_ETCD_VERSION:-v3.7.0}"
coredns="${MPP_COREDNS_VERSION:-v1.14.7}"
recipe="1"
cache="${MPP_CACHE_DIR:-$HOME/.cache/mpp}"
home="$cache/tools/cluster-$k8s-etcd-$etcd-coredns-$coredns-r$recipe"
stamp="$home/.complete"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf '[cluster build] %s\n' "$*" >&2; }

if [ -f "$stamp" ] && "$home/bin/kube-apiserver" --version >/dev/null 2>&1; then
  log "reusing $home"
  printf '%s\n' "$home/bin"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  log "go is not on PATH: install Go 1.26 or newer (the cluster is built from source here)"
  exit 1
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$cache/tools"
work="$cache/tools/.cluster-src-$k8s-etcd-$etcd-coredns-$coredns-r$recipe"
out="$(mktemp -d "$cache/tools/.cluster-bin.XXXXXX")"
trap 'rm -rf "$out"' EXIT
mkdir -p "$work"

# Go prints one line per package it compiles with -v; keep them, prefixed, as progress.
progress() { while IFS= read -r line; do printf '[cluster build]   %s\n' "$line" >&2; done; }
started=$SECONDS

# --- Kubernetes --------------------------------------------------------------------------
log "Kubernetes $k8s: reading its go.mod from the module proxy"
mod="$(cd "$work" && go mod download -json "k8s.io/kubernetes@$k8s" |
  sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
staging="${k8s/v1./v0.}"
mkdir -p "$work/k8s"
{
  printf 'module mpp.local/cluster/k8s\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\n' "$k8s"
  sed -n 's/^[[:space:]]*\(k8s\.io\/[a-z0-9-]*\) => \.\/staging\/.*/\1/p' "$mod" |
    while read -r m; do printf 'replace %s => %s %s\n' "$m" "$m" "$staging"; done
} >"$work/k8s/go.mod"
log "Kubernetes $k8s: $(grep -c '^replace' "$work/k8s/go.mod") staging modules at $staging"
version_flags() {
  local v="$1" major minor
  major="${v#v}"; major="${major%%.*}"
  minor="${v#v*.}"; minor="${minor%%.*}"
  printf -- '-s -w -X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=%s -X k8s.io/component-base/version.gitMinor=%s -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=%s -X k8s.io/client-go/pkg/version.gitMajor=%s -X k8s.io/client-go/pkg/version.gitMinor=%s' \
    "$v" "$major" "$minor" "$v" "$major" "$minor"
}
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
  log "building $cmd ($((SECONDS - started))s so far)"
  (cd "$work/k8s" && go build -v -trimpath -ldflags "$(version_flags "$k8s")" \
    -o "$out/$cmd" "k8s.io/kubernetes/cmd/$cmd") 2>&1 | progress
  [ "${PIPESTATUS[0]}" -eq 0 ] && [ -x "$out/$cmd" ] || { log "$cmd failed"; exit 1; }
done

# --- etcd --------------------------------------------------------------------------------
log "etcd $etcd ($((SECONDS - started))s so far)"
mkdir -p "$work/etcd"
printf 'module mpp.local/cluster/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
  "$etcd" >"$work/etcd/go.mod"
cat >"$work/etcd/main.go" <<'GO'
// etcd's own entry point, built from the published server module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
(cd "$work/etcd" && go build -v -trimpath -ldflags "-s -w" -o "$out/etcd" .) 2>&1 | progress
[ "${PIPESTATUS[0]}" -eq 0 ] || { log "etcd failed"; exit 1; }

# --- CoreDNS -----------------------------------------------------------------------------
log "CoreDNS $coredns ($((SECONDS - started))s so far)"
(cd "$work" && GOBIN="$out" go install -v -trimpath -ldflags "-s -w" \
  "github.com/coredns/coredns@$coredns") 2>&1 | progress
[ "${PIPESTATUS[0]}" -eq 0 ] || { log "coredns failed"; exit 1; }

# --- pause -------------------------------------------------------------------------------
mkdir -p "$work/pause"
cp "$here/pause.go" "$work/pause/main.go"
printf 'module mpp.local/cluster/pause\n\ngo 1.26.0\n' >"$work/pause/go.mod"
(cd "$work/pause" && go build -trimpath -ldflags "-s -w" -o "$out/pause" .)

"$out/kube-apiserver" --version >&2
printf '%s\n' "$recipe" >"$out/.complete"
rm -rf "$home"
mkdir -p "$home"
mv "$out" "$home/bin"
mv "$home/bin/.complete" "$stamp"
trap - EXIT
log "built in $((SECONDS - started))s: $home/bin"
printf '%s\n' "$home/bin"
