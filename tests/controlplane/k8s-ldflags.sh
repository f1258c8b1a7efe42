# Sourced by build.sh and matrix.sh: the -ldflags that make a Kubernetes binary's `--version`
# tell the truth. A bare `go build` reports v0.0.0, which kubeadm rejects as a control-plane
# version.
#
#   k8s_ldflags MODULE_DIR VERSION   # prints the -X flags for k8s.io/kubernetes VERSION
#   origin_hash MODULE_DIR MODULE@VERSION

# The module proxy serves no VCS origin, so the commit is only known when `go mod download`
# reports one; otherwise say "unknown" rather than invent one.
origin_hash() { (cd "$1" && go mod download -json "$2" 2>/dev/null | awk -F'"' '/"Hash"/ {print $4; exit}'); }

k8s_ldflags() {
    local dir="$1" version="$2" minor commit build_date pkg flags=""
    minor="${version#v1.}"; minor="${minor%%.*}"
    commit="$(origin_hash "$dir" k8s.io/kubernetes@"$version")"
    build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date -X $pkg.gitCommit=${commit:-unknown}"
    done
    echo "$flags"
}
