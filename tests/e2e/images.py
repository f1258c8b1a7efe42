"""The images the real node runs, made locally as OCI image tarballs (no registry is reachable).

Each image is one uncompressed layer with a static binary, a config naming its entrypoint, and
an index whose ``io.containerd.image.name`` annotation is the name the kubelet asks for, so
``ctr -n k8s.io images import`` makes it present under that name:

- the control-plane images (kube-apiserver, kube-controller-manager, kube-scheduler, etcd),
  named as ``kubeadm config images list`` prints them for the e2e image repository, holding
  the binaries built in the test-binary cache;
- the pause image: busybox's shell waiting for a signal (a sandbox must stop on SIGTERM, and
  a shell as PID 1 only does so with a trap);
- ``busybox``, the ordinary pod that ``kubectl logs``/``exec`` reach through the kubelet's
  serving certificate (Debian's busybox-static).

An image is rebuilt only when its inputs (binary size and mtime, this file) change.

    python -m tests.e2e.images --testbin DIR --out DIR
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

# Where the e2e cluster's images come from: a name of our own that resolves nowhere, so a
# missing image fails with ErrImageNeverPull instead of a pull from the network.
REPOSITORY = "registry.kucero.test"
KUBERNETES_VERSION = "v1.37.2"
BUSYBOX = Path("/bin/busybox")
TEST_POD_IMAGE = f"{REPOSITORY}/busybox:e2e"
PAUSE_SCRIPT = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"


def kubeadm_images(kubeadm: Path) -> list[str]:
    """The images kubeadm's init would run, for our repository (not coredns or kube-proxy: their
    addon phases are skipped)."""
    out = subprocess.run(
        [str(kubeadm), "config", "images", "list", "--image-repository", REPOSITORY,
         "--kubernetes-version", KUBERNETES_VERSION],
        check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    return [name for name in out if "/coredns" not in name and "/kube-proxy" not in name]


def _tar_bytes(files: dict[str, tuple[bytes | Path, int]], links: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent) for p in [*files, *links]} - {"."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, (content, mode) in sorted(files.items()):
            data = content.read_bytes() if isinstance(content, Path) else content
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        for path, target in sorted(links.items()):
            info = tarfile.TarInfo(path)
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
            tar.addfile(info)
    return buf.getvalue()


def write_image(
    out: Path,
    name: str,
    files: dict[str, tuple[bytes | Path, int]],
    entrypoint: list[str],
    links: dict[str, str] | None = None,
) -> None:
    """An OCI image layout tarball of one layer at ``out``, named ``name``."""
    layer = _tar_bytes(files, links or {})
    blobs: dict[str, bytes] = {}

    def blob(data: bytes, media: str) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media, "digest": digest, "size": len(data)}

    layer_desc = blob(layer, "application/vnd.oci.image.layer.v1.tar")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": entrypoint,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    }
    config_desc = blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    }
    manifest_desc = blob(
        json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json"
    )
    manifest_desc["platform"] = {"architecture": "amd64", "os": "linux"}
    manifest_desc["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
    }
    index = {"schemaVersion": 2, "manifests": [manifest_desc]}
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        entries = {
            "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
            "index.json": json.dumps(index).encode(),
        }
        entries |= {f"blobs/sha256/{d.split(':')[1]}": data for d, data in blobs.items()}
        for path, data in entries.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)


def _stamp(*inputs: Path) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    for p in inputs:
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def build_all(testbin: Path, out: Path) -> list[Path]:
    """Every image tarball, rebuilt only when its inputs changed; returns their paths."""
    specs: list[tuple[str, dict[str, tuple[bytes | Path, int]], list[str], dict[str, str]]] = []
    for name in kubeadm_images(testbin / "kubeadm"):
        component = name.rsplit("/", 1)[1].split(":")[0]
        if component == "pause":
            specs.append(
                (name, {"bin/busybox": (BUSYBOX, 0o755)},
                 ["/bin/busybox", "sh", "-c", PAUSE_SCRIPT], {})
            )  # fmt: skip
        else:
            binary = testbin / component
            specs.append(
                (name, {f"usr/local/bin/{component}": (binary, 0o755)},
                 [f"/usr/local/bin/{component}"], {})
            )  # fmt: skip
    specs.append(
        (TEST_POD_IMAGE, {"bin/busybox": (BUSYBOX, 0o755)}, ["/bin/sh"],
         {"bin/sh": "busybox", "bin/sleep": "busybox", "bin/echo": "busybox", "bin/cat": "busybox"})
    )  # fmt: skip
    made = []
    for name, files, entrypoint, links in specs:
        inputs = [src for src, _ in files.values() if isinstance(src, Path)]
        base = name.rsplit("/", 1)[1].replace(":", "_")
        path = out / f"{base}-{_stamp(*inputs)}.oci.tar"
        if not path.exists():
            for old in out.glob(f"{base}-*.oci.tar"):
                old.unlink()
            write_image(path, name, files, entrypoint, links)
            print(f"e2e: image {name} made ({path.stat().st_size >> 20} MiB)")
        made.append(path)
    return made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--testbin", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    build_all(args.testbin, args.out)


if __name__ == "__main__":
    main()
