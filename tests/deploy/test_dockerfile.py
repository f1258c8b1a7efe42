"""The Dockerfile, checked without a Docker engine (none on the build machines): hadolint
(installed from PyPI with the dev extras) finds nothing, the base image is pinned by digest
and its tag named, every COPY source exists and gets through .dockerignore, and the image
runs `kucero` as its entry point."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.controlplane import binaries
from tests.deploy import tools

DOCKERFILE = tools.REPO / "Dockerfile"
DIGEST = re.compile(r"^ARG BASE_IMAGE=(?P<tag>[\w./-]+:[\w.-]+)@sha256:[0-9a-f]{64}$", re.M)


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        binaries.gate("hadolint not installed: `make .venv/.installed` (dev extras)")
    assert hadolint is not None
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_base_is_pinned_by_digest_with_its_tag_named() -> None:
    text = DOCKERFILE.read_text()
    match = DIGEST.search(text)
    assert match, "ARG BASE_IMAGE=<tag>@sha256:<digest> missing"
    tag = match["tag"]
    assert f"# {tag} " in text  # the comment saying which tag the digest is
    assert f'org.opencontainers.image.base.name="docker.io/library/{tag}"' in text
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f == "${BASE_IMAGE}" for f in froms), froms


def test_entrypoint_is_kucero_and_oci_labels_are_set() -> None:
    text = DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["kucero"]' in text
    for label in ("title", "description", "version", "licenses", "source", "base.name"):
        assert f"org.opencontainers.image.{label}=" in text, label


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns used here: last match wins, ! re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or (
            pattern.startswith("**/") and any(fnmatch.fnmatch(x, pattern[3:]) for x in parts)
        ):
            ignored = not negate
    return ignored


def test_every_copy_source_exists_and_gets_through_dockerignore() -> None:
    patterns = [
        line.strip()
        for line in (tools.REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE.read_text(), re.M):
        *sources, _ = line.split()
        for source in sources:
            matches = sorted(tools.REPO.glob(source.rstrip("/")))
            files = [
                str(f.relative_to(tools.REPO))
                for m in matches
                for f in ([m] if m.is_file() else sorted(m.rglob("*")))
                if f.is_file() and "__pycache__" not in f.parts
            ]
            sent = [f for f in files if not _ignored(f, patterns)]
            assert sent, f"COPY {source}: nothing of it is in the build context"
            if "*" not in source:  # a named file or directory goes in whole, but for
                # policies/kustomization.yaml (kustomize's, not the package's)
                missing = set(files) - set(sent) - {"policies/kustomization.yaml"}
                assert not missing, missing
    # and what the image must not carry stays out
    for path in (
        "tests/conftest.py",
        ".venv/bin/python",
        "policies/kustomization.yaml",
        "reconciler/__pycache__/cli.cpython-311.pyc",
        "kustomize/base/kustomization.yaml",
    ):
        assert _ignored(path, patterns), path
