"""The installed wheel works outside the checkout: ``python -m reconciler.demo`` and
``kucero validate-policy`` on the policies it ships.

A checkout hides packaging mistakes (the demo used to read ``policies/`` next to the source
tree, which a wheel or the image does not have), so this builds the wheel from a copy of the
sources, installs it into a fresh virtual environment and runs the commands from a temporary
directory. The fresh environment borrows this environment's dependencies through a ``.pth``
line instead of downloading them: a path added that way is not a site directory, so the
editable install of the checkout in it is not picked up (the test checks where ``reconciler``
is imported from).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


def run(argv: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the kucero wheel installed; returns its bin/."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    shutil.copytree(REPO, source, ignore=SKIP)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            tmp / "dist",
            source,
        ],
        cwd=tmp,
    )
    (wheel,) = (tmp / "dist").glob("kucero-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    python = venv / "bin" / "python"
    run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel],
        cwd=tmp,
    )
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp)
    (Path(site.strip()) / "kucero-test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv / "bin"


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONSAFEPATH"] = "1"  # the working directory is not on sys.path either
    return env


def test_installed_package_is_imported_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    where = run(
        [installed / "python", "-c", "import reconciler; print(reconciler.__file__)"],
        cwd=tmp_path,
        env=clean_env(),
    )
    assert where.startswith(str(installed.parent)), where


def test_demo_runs_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    out = run([installed / "python", "-m", "reconciler.demo"], cwd=tmp_path, env=clean_env())
    assert "converged to policy revision" in out
    assert out.count("$ kucero ") == 5


def test_validate_policy_on_the_shipped_policies(installed: Path, tmp_path: Path) -> None:
    shipped = run(
        [
            installed / "python",
            "-c",
            "import importlib.resources as r; "
            "print('\\n'.join(str(p) for p in r.files('reconciler.policies').iterdir() "
            "if p.name.endswith('.yaml')))",
        ],
        cwd=tmp_path,
        env=clean_env(),
    ).split()
    assert sorted(Path(p).name for p in shipped) == sorted(
        p.name for p in (REPO / "policies").glob("*.yaml")
    )
    out = run([installed / "kucero", "validate-policy", *shipped], cwd=tmp_path, env=clean_env())
    assert out.count(": valid (revision ") == len(shipped)
    for path in shipped:
        assert path.startswith(str(installed.parent)), path
