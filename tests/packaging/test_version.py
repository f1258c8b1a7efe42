"""One version everywhere a user reads it: ``kucero --version``, the installed distribution's
metadata (the wheel's, from pyproject.toml's dynamic version), the image label (the
Dockerfile's ``ARG VERSION``) and the newest release heading of CHANGELOG.md."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import reconciler

REPO = Path(__file__).resolve().parents[2]


def test_cli_metadata_image_and_changelog_agree_on_the_version() -> None:
    version = reconciler.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    printed = subprocess.run(
        [sys.executable, "-m", "reconciler", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    assert printed == f"kucero {version}"
    assert importlib.metadata.version("kucero") == version
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.findall(r"^ARG VERSION=(\S+)$", dockerfile, re.M) == [version]
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert releases and releases[0] == version, releases


def test_license_file_is_the_apache_license_the_metadata_names() -> None:
    assert importlib.metadata.metadata("kucero")["License-Expression"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
