"""What remains of kucero, and what docs/uninstall.md says about it (test_uninstall.py).

In the API: every object of every kind the API server lists (discovery, so a kind nobody thought
of is not missed), in every namespace and cluster-wide, that names kucero: by its name, a label,
an owner, an Event's subject or reporter, a CSR condition's reason; and on objects that are not
kucero's, every annotation or label whose key names kucero (``kucero.io/status`` on a Node).

On a node: every path of a host root whose name says kucero (a kucero directory is one entry,
its content is not listed).

In the doc: the ```sh blocks of a numbered section, run as written (``run``: bash, the test
suite's kubectl first on PATH), the table of node-side files (its first column's patterns,
``<UTC time>`` standing for anything), and what it says expires by itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.controlplane import binaries
from tests.deploy import tools

DOC = tools.REPO / "docs" / "uninstall.md"
WORD = "kucero"
# How the doc's "What expires by itself" paragraph names each kind that may remain.
EXPIRING = {"Events": "Event", "CSRs": "CertificateSigningRequest"}


@dataclasses.dataclass(frozen=True, order=True)
class Leftover:
    kind: str
    where: str  # namespace/name, or name for a cluster-scoped object
    why: str  # what names kucero

    def __str__(self) -> str:
        return f"{self.kind} {self.where}: {self.why}"


def in_api(kubeconfig: Path) -> list[Leftover]:
    """Everything of kucero the API server holds, sorted."""
    kinds = tools.kubectl("api-resources", "--verbs=list", "-o", "name", kubeconfig=kubeconfig)
    listed = tools.kubectl(
        "get", ",".join(kinds.stdout.split()), "--all-namespaces", "-o", "json",
        kubeconfig=kubeconfig,
    )  # fmt: skip
    seen: set[str] = set()
    out = []
    for obj in json.loads(listed.stdout)["items"]:
        meta = obj["metadata"]
        where = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
        # Events are listed twice (v1 and events.k8s.io/v1); ComponentStatuses have no uid
        key = meta.get("uid") or f"{obj['kind']} {where}"
        if key in seen:
            continue
        seen.add(key)
        out += [Leftover(obj["kind"], where, why) for why in _whys(obj)]
    return sorted(out)


def _whys(obj: dict[str, Any]) -> list[str]:
    """Why ``obj`` is kucero's (one reason), or its keys that name kucero (one each)."""
    meta = obj["metadata"]
    labels = meta.get("labels") or {}
    if WORD in meta["name"]:
        return ["name"]
    for key, value in labels.items():
        if WORD in value:
            return [f"label {key}={value}"]
    for owner in meta.get("ownerReferences") or []:
        if WORD in owner.get("name", ""):
            return [f"owned by {owner['kind']} {owner['name']}"]
    if obj["kind"] == "Event":
        about = obj.get("involvedObject") or {}
        source = obj.get("source") or {}
        for field in (
            about.get("name", ""),
            obj.get("reportingComponent", ""),
            source.get("component", ""),
        ):
            if WORD in field.lower():
                return [f"{obj.get('reason')} about {about.get('kind')} {about.get('name')}"]
    if obj["kind"] == "CertificateSigningRequest":
        for condition in (obj.get("status") or {}).get("conditions") or []:
            if WORD in f"{condition.get('reason')} {condition.get('message')}".lower():
                return [f"{condition['type']} ({condition.get('reason')})"]
    keys = [("annotation", k) for k in meta.get("annotations") or {}] + [
        ("label", k) for k in labels
    ]
    return [f"{what} {key}" for what, key in sorted(keys) if WORD in key]


def on_host(root: Path) -> list[str]:
    """Paths under ``root`` (relative, a directory with a trailing ``/``) whose name says kucero,
    without what is inside a kucero directory."""
    out = []
    for directory, dirs, files in os.walk(root):
        here = Path(directory).relative_to(root)
        for name in list(dirs):
            if WORD in name:
                out.append(f"{here / name}/")
                dirs.remove(name)
        out += [str(here / name) for name in files if WORD in name]
    return sorted(out)


def section(number: int) -> str:
    """The text of the doc's ``## <number>.`` section."""
    text = DOC.read_text()
    found = re.search(rf"^## {number}\. .*?(?=^## |\Z)", text, re.M | re.S)
    assert found, f"{DOC}: no section '## {number}.'"
    return found.group(0)


def sh_blocks(text: str) -> list[str]:
    blocks = re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S)
    assert blocks, f"no ```sh block in:\n{text}"
    return blocks


def run(
    number: int, bin_dir: Path, kubeconfig: Path | None = None, host_root: Path | None = None
) -> str:
    """Run the ```sh blocks of the doc's section ``number`` as written, with bash, and return
    what they printed; fails on the first command that fails. With ``kubeconfig``: the test
    suite's kubectl first on PATH and ``KUBECONFIG`` set. With ``host_root``: ``--host-root /``
    pointed at that simulated node (the one change to the text). This checkout's ``kucero``
    is on PATH."""
    bin_dir.mkdir(exist_ok=True)
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    if kubeconfig is not None:
        tools.require()
        with contextlib.suppress(FileExistsError):
            (bin_dir / "kubectl").symlink_to(binaries.path("kubectl"))
        env["KUBECONFIG"] = str(kubeconfig)
    out = ""
    for block in sh_blocks(section(number)):
        if host_root is not None:
            block = re.sub(r"--host-root /(?=\s)", f"--host-root {host_root}", block)
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block],
            cwd=tools.REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        print(f"$ {block}{done.stdout}{done.stderr}")
        assert done.returncode == 0, f"section {number} failed:\n{block}\n{done.stderr}"
        out += done.stdout + done.stderr
    return out


@dataclasses.dataclass(frozen=True)
class Row:
    patterns: tuple[str, ...]  # fnmatch patterns of file names; a directory's ends in /
    remove: str  # the table's "remove" cell

    def matches(self, path: str) -> bool:
        """Whether the last component of ``path`` (from ``on_host``) is one of this row's."""
        name = path.rstrip("/").rpartition("/")[2] + ("/" if path.endswith("/") else "")
        return any(fnmatch.fnmatchcase(name, p) for p in self.patterns)


def table(text: str) -> list[Row]:
    """The rows of the first Markdown table in ``text`` (after its header and rule)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) > 2, f"no table in:\n{text}"
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = re.findall(r"`([^`]+)`", cells[0])
        assert names, f"no `path` in the first cell of: {line}"
        patterns = tuple(re.sub(r"<[^>]*>", "*", n) for n in names)
        rows.append(Row(patterns, cells[-1]))
    return rows


def expiring_kinds(text: str) -> set[str]:
    """The kinds the paragraph starting "What expires by itself" names."""
    found = re.search(r"^What expires by itself.*?(?=\n\n|\Z)", text, re.M | re.S)
    assert found, f"{DOC}: no 'What expires by itself' paragraph"
    return {kind for word, kind in EXPIRING.items() if word in found.group(0)}
