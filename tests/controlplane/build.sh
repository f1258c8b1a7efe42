#!/usr/bin/env bash
# Build the real control-plane binaries the test suite runs (kube-apiserver,
# kube-controller-manager, kubeadm, etcd, kubectl, and kubeletserving: the kubelet's
# serving-certificate manager, k8s/kubeletserving) from the published Go modules pinned in k8s/
# and etcd/, into a cache outside the repository. Does nothing when they are already there.
#
#   tests/controlplane/build.sh          # build or reuse; prints the directory
#   KUCERO_TESTBIN=/some/dir build.sh    # another cache root
#
# A cold build on two cores takes several minutes (most of it kube-apiserver); it is done once
# per machine and Kubernetes version.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

k8s_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/k8s/go.mod")"
etcd_version="$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" {print $3}' "$here/etcd/go.mod")"
out="${KUCERO_TESTBIN:-${XDG_CACHE_HOME:-$HOME/.cache}/kucero-testbin}/${k8s_version}-etcd-${etcd_version}"
binaries=(kube-apiserver kube-controller-manager kubeadm etcd kubectl kubeletserving)

missing=()
for b in "${binaries[@]}"; do [[ -x "$out/$b" ]] || missing+=("$b"); done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "testbin: cached in $out"
    exit 0
fi

command -v go >/dev/null || { echo "testbin: the Go toolchain is needed to build ${missing[*]} (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$out"
start=$SECONDS
echo "testbin: building ${missing[*]} (Kubernetes $k8s_version, etcd $etcd_version) into $out with $(go version | awk '{print $3}'); a cold build takes several minutes"

# The version ldflags make `--version` tell the truth (k8s-ldflags.sh).
source "$here/k8s-ldflags.sh"
etcd_commit="$(origin_hash "$here/etcd" go.etcd.io/etcd/server/v3@"$etcd_version")"
k8s_ldflags="$(k8s_ldflags "$here/k8s" "$k8s_version")"

# Static binaries, as Kubernetes releases them: kubeadm must run chrooted into a node tree.
export CGO_ENABLED=0
for b in "${missing[@]}"; do
    t=$SECONDS
    if [[ $b == etcd ]]; then
        (cd "$here/etcd" && go build -mod=readonly -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${etcd_commit:-unknown}" \
            -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3)
    elif [[ $b == kubeletserving ]]; then
        # the kubelet's serving-certificate manager, for kucero's CSR signer tests (k8s/kubeletserving)
        (cd "$here/k8s" && go build -mod=readonly -trimpath -ldflags "-s -w" -o "$out/$b.tmp" ./kubeletserving)
    else
        (cd "$here/k8s" && go build -mod=readonly -trimpath -ldflags "-s -w $k8s_ldflags" -o "$out/$b.tmp" "k8s.io/kubernetes/cmd/$b")
    fi
    mv "$out/$b.tmp" "$out/$b"   # only complete binaries count as cached
    echo "testbin: $b built in $((SECONDS - t))s"
done
echo "testbin: done in $((SECONDS - start))s: $out ($(du -sh "$out" | cut -f1))"
