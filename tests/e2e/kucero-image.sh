#!/usr/bin/env bash
# The project's image, built from its Dockerfile as it is, with only BASE_IMAGE overridden: no
# registry is reachable here, so the base (the Dockerfile's python:slim-bookworm) is replaced by
# a local Debian 12 made with mmdebstrap holding the same Python 3 with venv and pip. buildah
# keeps its own storage in the cache directory (vfs, chroot isolation: no daemon, no systemd).
#
#   tests/e2e/kucero-image.sh REPO OUT     # writes OUT/kucero-<hash>.docker.tar and OUT/kucero.image
#
# The base is rebuilt when its package list changes, the image when a file the Dockerfile
# copies (its build context, after .dockerignore) or the Dockerfile itself changes.
set -euo pipefail
repo="$1"
out="$2"
base_packages="python3,python3-venv,python3-pip,python-is-python3,ca-certificates"
suite=bookworm
# one build at a time per cache directory (a second waits, then finds the image built)
exec 9>"$out/.lock"
flock 9
# buildah's own network settings stay in the cache (it would create /etc/cni/net.d otherwise)
mkdir -p "$out/buildah-cni"
printf '[network]\nnetwork_config_dir = "%s"\n' "$out/buildah-cni" >"$out/containers.conf"
export CONTAINERS_CONF="$out/containers.conf"
buildah=(buildah --root "$out/buildah" --runroot "$out/buildah-run" --storage-driver vfs)

# The machine's trust store goes into the base, as an organisation's base images carry its
# CAs: pip inside the build reaches PyPI through whatever TLS proxy the machine trusts.
trust=/etc/ssl/certs/ca-certificates.crt
base_tag="b$({ echo "$suite $base_packages"; cat "$trust"; } | sha256sum | cut -c1-12)"
base="localhost/kucero-e2e-base:$base_tag"
if ! "${buildah[@]}" inspect --type image "$base" >/dev/null 2>&1; then
    t=$SECONDS
    rootfs="$out/base-$base_tag.tar"
    mmdebstrap --quiet --variant=minbase --include="$base_packages" "$suite" "$rootfs"
    c="$("${buildah[@]}" from scratch)"
    "${buildah[@]}" add "$c" "$rootfs" / >/dev/null
    "${buildah[@]}" copy "$c" "$trust" "$trust" >/dev/null
    "${buildah[@]}" config --env PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd python3 "$c"
    "${buildah[@]}" commit --quiet "$c" "$base" >/dev/null
    "${buildah[@]}" rm "$c" >/dev/null
    "${buildah[@]}" images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/kucero-e2e-base:' \
        | grep -vx "$base" | xargs -r "${buildah[@]}" rmi >/dev/null 2>&1 || true
    rm -f "$rootfs"
    echo "e2e: base image $base made in $((SECONDS - t))s"
fi

# The build context as the Dockerfile sees it (.dockerignore keeps only these).
context_hash="$(cd "$repo" && { cat Dockerfile; echo "$base"
    find pyproject.toml README.md requirements/runtime.txt reconciler schema policies -type f \
        ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path policies/kustomization.yaml \
        -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-12)"
image="localhost/kucero:e2e-$context_hash"
archive="$out/kucero-$context_hash.docker.tar"
if [[ ! -f "$archive" ]]; then
    t=$SECONDS
    "${buildah[@]}" bud --quiet --isolation chroot --network host --layers=false \
        --build-arg "BASE_IMAGE=$base" -t "$image" -f "$repo/Dockerfile" "$repo" >/dev/null
    rm -f "$out"/kucero-*.docker.tar
    "${buildah[@]}" push --quiet "$image" "docker-archive:$archive.tmp:$image"
    mv "$archive.tmp" "$archive"
    # keep the storage small: only the base and the newest image
    "${buildah[@]}" images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/kucero:' \
        | grep -vx "$image" | xargs -r "${buildah[@]}" rmi >/dev/null 2>&1 || true
    "${buildah[@]}" rmi --prune >/dev/null 2>&1 || true
    echo "e2e: image $image built from the Dockerfile in $((SECONDS - t))s"
fi
printf '%s\n%s\n' "$image" "$archive" >"$out/kucero.image"
