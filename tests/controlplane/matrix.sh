#!/usr/bin/env bash
# Build kubeadm and kubeletbootstrap (the kubelet's TLS bootstrap and start-up reading of its
# files, k8s/kubeletbootstrap) for every Kubernetes minor of the version matrix, from the
# published Go modules pinned in versions/<minor>/go.mod and, for the newest, k8s/go.mod, into
# the same cache as build.sh. Does nothing for a version whose binaries are already there.
#
#   tests/controlplane/matrix.sh           # build or reuse; prints each directory
#   KUCERO_TESTBIN=/some/dir matrix.sh     # another cache root
#
# Each version is <cache>/matrix-<version>/. Builds run under `nice -n 15`: the machine is
# shared. A cold build of one minor takes a few minutes (module downloads and kubeadm's graph).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/k8s-ldflags.sh"

root="${KUCERO_TESTBIN:-${XDG_CACHE_HOME:-$HOME/.cache}/kucero-testbin}"
binaries=(kubeadm kubeletbootstrap)
command -v go >/dev/null || { echo "matrix: the Go toolchain is needed (https://go.dev/dl)" >&2; exit 1; }
export CGO_ENABLED=0   # static, as Kubernetes releases them: both run chrooted into node trees

for mod in "$here"/versions/*/go.mod "$here/k8s/go.mod"; do
    dir="$(dirname "$mod")"
    # `require k8s.io/kubernetes vX` alone or inside a require ( ... ) block
    version="$(awk '($1 == "require" && $2 == "k8s.io/kubernetes") {print $3} ($1 == "k8s.io/kubernetes" && $2 ~ /^v/) {print $2}' "$mod")"
    [[ -n $version ]] || { echo "matrix: $mod requires no k8s.io/kubernetes" >&2; exit 1; }
    out="$root/matrix-$version"
    missing=()
    for b in "${binaries[@]}"; do [[ -x "$out/$b" ]] || missing+=("$b"); done
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "matrix: $version cached in $out"
        continue
    fi
    mkdir -p "$out"
    start=$SECONDS
    echo "matrix: building ${missing[*]} (Kubernetes $version) into $out with $(go version | awk '{print $3}')"
    ldflags="-s -w $(k8s_ldflags "$dir" "$version")"
    for b in "${missing[@]}"; do
        t=$SECONDS
        if [[ $b == kubeadm ]]; then pkg=k8s.io/kubernetes/cmd/kubeadm; else pkg=./kubeletbootstrap; fi
        (cd "$dir" && nice -n 15 go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$out/$b.tmp" "$pkg")
        mv "$out/$b.tmp" "$out/$b"   # only complete binaries count as cached
        echo "matrix: $version $b built in $((SECONDS - t))s"
    done
    echo "matrix: $version done in $((SECONDS - start))s: $out ($(du -sh "$out" | cut -f1))"
done
