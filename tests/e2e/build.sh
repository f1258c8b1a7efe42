#!/usr/bin/env bash
# Everything the real-node tests need that is not in this repository, made once per machine
# and cached (a warm run only checks):
#
#   1. Debian packages: containerd, runc, the CNI plugins, kubeadm's preflight tools
#      (iptables, conntrack, socat, ethtool, ebtables), buildah and mmdebstrap (the project's
#      image), busybox-static (the pause image and the ordinary test pod). apt-get, nothing by hand.
#   2. kubelet and kube-scheduler from the Go module pinned in tests/controlplane/k8s (the same
#      build, stamps and cache directory as the other test binaries), and crictl.
#   3. The images: pause, the control-plane images and the test pod's image as OCI tarballs
#      (tests/e2e/images.py), and the project's image from the Dockerfile as it is, with only
#      BASE_IMAGE replaced by a local Debian base (mmdebstrap), rebuilt when its inputs change.
#
#   tests/e2e/build.sh          # build or reuse; prints the cache directory on its last line
#
# Needs root (apt-get, buildah). Set KUCERO_E2E_NO_APT=1 to fail instead of installing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
start=$SECONDS

packages=(containerd runc containernetworking-plugins iptables conntrack socat ethtool ebtables
          buildah mmdebstrap busybox-static)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ -n "${KUCERO_E2E_NO_APT:-}" ]]; then
        echo "e2e: missing Debian packages: ${missing[*]}" >&2
        exit 1
    fi
    echo "e2e: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. kubelet and kube-scheduler: tests/controlplane/build.sh, asked for those two only.
KUCERO_TESTBIN_ONLY="kubelet kube-scheduler" nice -n 10 "$repo/tests/controlplane/build.sh" >&2
out="$(KUCERO_TESTBIN_ONLY="kubelet kube-scheduler" "$repo/tests/controlplane/build.sh" | sed 's/^testbin: cached in //')"
crictl_version=v1.37.0
if [[ ! -x "$out/crictl" ]]; then
    t=$SECONDS
    tmp="$(mktemp -d)"
    CGO_ENABLED=0 GOBIN="$tmp" nice -n 10 go install -trimpath -ldflags "-s -w" \
        "sigs.k8s.io/cri-tools/cmd/crictl@$crictl_version" >&2
    mv "$tmp/crictl" "$out/crictl" && rmdir "$tmp"
    echo "e2e: crictl $crictl_version built in $((SECONDS - t))s" >&2
fi

# 3. Images.
mkdir -p "$out/e2e"
"$repo/.venv/bin/python" -m tests.e2e.images --testbin "$out" --out "$out/e2e" >&2
"$here/kucero-image.sh" "$repo" "$out/e2e" >&2
echo "e2e: build checked in $((SECONDS - start))s" >&2
echo "$out"
