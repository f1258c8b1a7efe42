#!/usr/bin/env bash
# Build the tools the deployment tests use, from published Go modules, into a cache outside
# the repository (like ../controlplane/build.sh); does nothing when they are already there.
#
#   rulecheck   Prometheus's rulefmt + PromQL parser over the PrometheusRule (tools/rulecheck)
#   promtool    github.com/prometheus/prometheus/cmd/promtool, `promtool check rules`
#   fluxapply   Flux's kustomize generator/SecureBuild + ssa ResourceManager (tools/fluxapply)
#   crds/       the ServiceMonitor and PrometheusRule CRDs of the published prometheus-operator
#               module (example/prometheus-operator-crd/), what the monitoring component needs;
#               Argo CD's Application and Flux's Kustomization and GitRepository CRDs (from the
#               argo-cd, kustomize-controller and source-controller modules), which the
#               manifests of docs/gitops/ are checked against
#
# The directory's name carries the versions and a hash of this script and the tools' sources, so
# a change to either builds a new one. Prints the directory on its last line; `build.sh --print-dir`
# only prints it (the tests find the tools that way, without building them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tools="$here/tools"

prometheus_operator=v0.85.0
prometheus="$(awk '$1 == "github.com/prometheus/prometheus" {print $2; exit}' "$tools/rulecheck/go.mod")"
sources_hash="$(cat "$0" "$tools"/*/go.mod "$tools"/*/go.sum "$tools"/*/*.go | sha256sum | cut -c1-12)"
out="${KUCERO_TESTBIN:-${XDG_CACHE_HOME:-$HOME/.cache}/kucero-testbin}/deploy-${prometheus_operator}-${prometheus}-${sources_hash}"
if [[ "${1:-}" == --print-dir ]]; then
    echo "$out"
    exit 0
fi
crds=(monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml)
# The GitOps manifests of docs/gitops/ are checked against the CRDs of the tools they are for.
argocd=v3.6.1
flux_kustomize_controller=v1.10.1
flux_source_controller=v1.10.1
gitops_crds=(application-crd.yaml kustomize.toolkit.fluxcd.io_kustomizations.yaml source.toolkit.fluxcd.io_gitrepositories.yaml)

complete() {
    for f in rulecheck promtool fluxapply; do [[ -x "$out/$f" ]] || return 1; done
    for f in "${crds[@]}" "${gitops_crds[@]}"; do [[ -s "$out/crds/$f" ]] || return 1; done
}
if complete; then
    echo "deploy tools: cached in $out"
    exit 0
fi
command -v go >/dev/null || { echo "deploy tools: the Go toolchain is needed (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$out/crds"
start=$SECONDS
export CGO_ENABLED=0

# The CRDs, exactly as the module publishes them (go mod download verifies its checksum
# against the checksum database).
if [[ ! -s "$out/crds/${crds[1]}" ]]; then
    dir="$(cd "$tools/rulecheck" && go mod download -json "github.com/prometheus-operator/prometheus-operator@$prometheus_operator" \
        | awk -F'"' '/"Dir"/ {print $4}')"
    for f in "${crds[@]}"; do
        cp "$dir/example/prometheus-operator-crd/$f" "$out/crds/$f.tmp"
        mv "$out/crds/$f.tmp" "$out/crds/$f"
    done
    echo "deploy tools: CRDs of prometheus-operator $prometheus_operator copied"
fi

# Modules whose go.mod asks for a newer Go than this one: `go mod download` still fetches and
# verifies the zip, then reports the version; only the files are used, nothing is built.
module_dir() {  # module_dir MODULE VERSION -> its directory in the module cache
    (cd "$tools/rulecheck" && go mod download "$1@$2" 2>/dev/null || true)
    local dir
    dir="$(go env GOMODCACHE)/$1@$2"
    [[ -d "$dir" ]] || { echo "deploy tools: could not download $1@$2" >&2; exit 1; }
    echo "$dir"
}
copy_crd() {  # copy_crd FILE NAME
    cp "$1" "$out/crds/$2.tmp"
    mv "$out/crds/$2.tmp" "$out/crds/$2"
}
if [[ ! -s "$out/crds/${gitops_crds[2]}" ]]; then
    copy_crd "$(module_dir github.com/argoproj/argo-cd/v3 "$argocd")/manifests/crds/${gitops_crds[0]}" "${gitops_crds[0]}"
    copy_crd "$(module_dir github.com/fluxcd/kustomize-controller "$flux_kustomize_controller")/config/crd/bases/${gitops_crds[1]}" "${gitops_crds[1]}"
    copy_crd "$(module_dir github.com/fluxcd/source-controller "$flux_source_controller")/config/crd/bases/${gitops_crds[2]}" "${gitops_crds[2]}"
    echo "deploy tools: Argo CD $argocd and Flux ($flux_kustomize_controller, $flux_source_controller) CRDs copied"
fi

build() {  # build NAME MODULE-DIR PACKAGE
    [[ -x "$out/$1" ]] && return 0
    local t=$SECONDS
    (cd "$2" && go build -mod=readonly -trimpath -ldflags "-s -w" -o "$out/$1.tmp" "$3")
    mv "$out/$1.tmp" "$out/$1"   # only complete binaries count as cached
    echo "deploy tools: $1 built in $((SECONDS - t))s"
}
build rulecheck "$tools/rulecheck" .
build promtool "$tools/rulecheck" github.com/prometheus/prometheus/cmd/promtool
build fluxapply "$tools/fluxapply" .
echo "deploy tools: done in $((SECONDS - start))s"
echo "$out"
