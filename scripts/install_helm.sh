#!/usr/bin/env bash
# Install the pinned helm binary (once) and print its path on stdout.
#
# helm is built from source through the Go module proxy (`go install`), into
# ~/.cache/mpp/tools/helm-<version>/ (or $MPP_CACHE_DIR/tools/...), outside the clone, so that
# every clone and CI run shares one build. Running it again does nothing once a binary built
# by this recipe (the stamp file) answers `helm version`. A build goes to a temporary folder
# first and is moved into place only once it runs, so an interrupted one is never used.
#
# Needs Go >= 1.26 (helm 3.22's go.mod asks for 1.26.0); GOTOOLCHAIN=local keeps Go from
# fetching another toolchain behind our back. Progress (each package as it compiles) goes to
# stderr; the first build takes a few minutes on two cores.
#
#   bash scripts/install_helm.sh            # prints e.g. /root/.cache/mpp/tools/helm-v3.22.0/helm
#   MPP_HELM_VERSION=v3.21.4 bash scripts/install_helm.sh
set -euo pipefail

version="${MPP_HELM_VERSION:-v3.22.0}"
cache="${MPP_CACHE_DIR:-$HOME/.cache/mpp}"
home="$cache/tools/helm-$version"
helm="$home/helm"

log() { printf '[install_helm] %s\n' "$*" >&2; }

# The stamp records how the binary was built; a binary without it (or from an older recipe of
# this script) is rebuilt.
recipe="2"
stamp="$home/.complete"
if [ -x "$helm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$recipe" ] &&
  "$helm" version --short >/dev/null 2>&1; then
  log "helm $version already installed: $helm"
  printf '%s\n' "$helm"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  log "go is not on PATH: install Go 1.26 or newer (helm $version is built from source here)"
  exit 1
fi
log "building helm $version with $(go version | cut -d' ' -f3) into $home (first time only)"

mkdir -p "$cache/tools"
tmp="$(mktemp -d "$cache/tools/.helm-$version.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"

# helm's own release builds set at link time the version it prints and the Kubernetes
# version it assumes offline (`helm template`, `helm lint`: Capabilities.KubeVersion), the
# latter from the client-go it was built with, as its Makefile does; without them a
# `go install` build claims Kubernetes 1.20 and refuses charts that need anything newer.
log "reading helm $version's go.mod from the module proxy"
if ! info="$(GOTOOLCHAIN=local go mod download -json "helm.sh/helm/v3@$version" 2>&1)"; then
  log "cannot fetch helm.sh/helm/v3@$version from $(go env GOPROXY):"
  printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Error": "\(.*\)",\{0,1\}$/  \1/p' >&2
  exit 1
fi
gomod="$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
client_go="$(sed -n 's/^[[:space:]]*k8s\.io\/client-go v\([0-9]*\)\.\([0-9]*\)\..*/\1 \2/p' "$gomod")"
if [ -z "$client_go" ]; then
  log "could not read k8s.io/client-go's version from $gomod"
  exit 1
fi
read -r cg_major cg_minor <<<"$client_go"
k8s_major=$((cg_major + 1))
k8s_minor=$cg_minor
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags="$ldflags -X $pkg.k8sVersionMajor=$k8s_major -X $pkg.k8sVersionMinor=$k8s_minor"
done
log "helm $version assumes Kubernetes $k8s_major.$k8s_minor (client-go $cg_major.$cg_minor)"
start=$SECONDS
set +e
GOBIN="$tmp" GOTOOLCHAIN=local CGO_ENABLED=0 \
  go install -v -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$version" 2>&1 |
  while IFS= read -r line; do printf '[install_helm]   %s\n' "$line" >&2; done
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ] || [ ! -x "$tmp/helm" ]; then
  log "go install failed (exit $status); nothing was installed"
  exit 1
fi
"$tmp/helm" version --short >/dev/null
printf '%s\n' "$recipe" >"$tmp/.complete"

# Another run may have finished meanwhile: keep whichever landed first.
if [ "$(cat "$stamp" 2>/dev/null)" = "$recipe" ]; then
  log "helm $version appeared meanwhile at $home; keeping it"
else
  rm -rf "$home"
  mv "$tmp" "$home"
  trap - EXIT
fi
log "helm $version ready in $((SECONDS - start))s: $("$helm" version --short)"
printf '%s\n' "$helm"
