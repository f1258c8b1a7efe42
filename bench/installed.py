"""kucero installed the way an operator gets it: the wheel, in a virtual environment of its own.

The development venv installs kucero in editable mode, which adds an import hook: a ``.pth``
file that runs code at every interpreter start and a finder consulted for every import, about
12 ms a process that no installed kucero (``pip install``, the image) pays. The process rows of
the bench run this installed copy instead, so they measure what operators run; one start-up
row keeps the editable figure beside it.

The wheel is built from a copy of the checkout (building in place would leave ``build/`` and an
egg-info behind), installed without dependencies, and the development venv's dependencies are
made visible by a plain path line in a ``.pth`` file: Python appends the path, it does not treat
it as a site directory, so the editable hook in there is not run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_SKIP = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


def install(work: Path) -> Path:
    """Build and install this checkout's wheel under ``work``; return its ``kucero`` script."""
    source, dist, venv = work / "src", work / "dist", work / "venv"
    shutil.copytree(REPO, source, ignore=_SKIP)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)])
    (wheel,) = dist.glob("kucero-*.whl")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    _run([*pip, "install", "-q", "--no-deps", str(wheel)])  # compiled, as pip always does
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    deps = Path(purelib.strip()) / "kucero-bench-deps.pth"
    deps.write_text(sysconfig.get_path("purelib") + "\n")
    shutil.rmtree(source)
    return venv / "bin" / "kucero"


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr}")
    return done.stdout
