#!/usr/bin/env bash
# Builds the pinned control plane (etcd, kube-apiserver, kube-controller-manager, kubectl) from
# Go modules, once. kube-controller-manager runs only the namespace and garbage-collector
# controllers in the e2e tier: without them a deleted namespace never goes away.
#
#   scripts/controlplane/build.sh          # prints the bin directory, building it if missing
#
# The binaries are cached outside the checkout, keyed by the pinned versions and the go.sum
# files, so every clone on this machine (and CI) reuses one build and a version change in
# versions.env or go.mod builds a new entry. Nothing is downloaded but Go modules.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${NETPOL_GUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/netpol-guard}"
key="$(cat "$here/versions.env" "$here"/kube/go.mod "$here"/kube/go.sum "$here"/etcd/go.mod "$here"/etcd/go.sum | sha256sum | cut -c1-12)"
dest="$cache_root/controlplane/kube-${KUBE_VERSION}_etcd-${ETCD_VERSION}_${key}"
complete() { for b in etcd kube-apiserver kube-controller-manager kubectl; do [ -x "$1/bin/$b" ] || return 1; done; }

if complete "$dest"; then
    echo "$dest/bin"
    exit 0
fi

command -v go >/dev/null || { echo "build.sh: the Go toolchain is needed to build the control plane (go not on PATH)" >&2; exit 2; }
mkdir -p "$cache_root/controlplane"
# One build at a time per machine: parallel test runs wait for the first one.
exec 9>"$cache_root/controlplane/.build.lock"
flock 9
if complete "$dest"; then
    echo "$dest/bin"
    exit 0
fi

tmp="$(mktemp -d "$cache_root/controlplane/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "build.sh: building kube-apiserver and kubectl ${KUBE_VERSION}, etcd ${ETCD_VERSION} into $dest (first time only; about 10-20 minutes on 2 cores)" >&2

# The version the binaries report (kubectl version, /version, helm's kubeVersion check), set
# the way Kubernetes' own hack/lib/version.sh does.
major="${KUBE_VERSION#v}"; major="${major%%.*}"
minor="${KUBE_VERSION#v*.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
    ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
done

export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
(cd "$here/kube" && go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
(cd "$here/kube" && go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager)
(cd "$here/kube" && go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/kubectl" k8s.io/kubernetes/cmd/kubectl)
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp/bin/etcd" .)

"$tmp/bin/etcd" --version >/dev/null
"$tmp/bin/kube-apiserver" --version >/dev/null
echo "$(( $(date +%s) - start )) s" > "$tmp/build-seconds"
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "build.sh: built in $(cat "$dest/build-seconds"), $(du -sh "$dest/bin" | cut -f1) in $dest/bin" >&2
echo "$dest/bin"
