"""Schemas of kucero's own files on a node: the journal and the state file.

kucero writes both atomically, so anything that does not match is damage from outside (a disk
error, an operator's edit, a hostile file), and it must never steer what kucero writes or
deletes: a journal names files to overwrite and a backup whose staged copies to install. So
each is checked field by field before use, and a mismatch is one ``OwnFileError`` naming the
file and the field, never a ``KeyError``, a ``RecursionError`` (JSON nested 100,000 deep) or a
write outside kubeadm's and the kubelet's directories.

Pure: bytes in, validated values out.
"""

from __future__ import annotations

import json
import re
from typing import Any

from reconciler.model import kubeadm, paths

# More files than one pass ever writes (11 leaves x 2 files + kubelet files + state file).
MAX_JOURNAL_FILES = 64
# Where a journal may write: kubeadm's and the kubelet's directories, nothing else.
WRITABLE_PREFIXES = (f"{kubeadm.KUBECONFIG_DIR}/", "/var/lib/kubelet/")
# What may be owed a restart: the static pods and the kubelet.
RESTARTABLE = frozenset((*kubeadm.COMPONENTS, "kubelet"))
_BACKUP = re.compile(re.escape(f"{paths.TMP}/{paths.BACKUP_PREFIX}") + r"[0-9A-Za-z-]{1,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# The staged new content of a journal entry: a temporary of ``Host.stage`` in the directory its
# target resolves to (older journals staged into the backup's ``new/`` and have no such field).
_STAGED = re.compile(re.escape(paths.TEMP_PREFIX) + r"[^/\0]{1,240}")


class OwnFileError(ValueError):
    """A journal or state file that does not match its schema; the message names the field."""


def parse_journal(data: bytes) -> dict[str, Any]:
    """The journal as ``{"backup": str, "files": [entry, ...]}``, every field checked."""
    doc = _json(data, paths.JOURNAL)
    where = paths.JOURNAL
    if not isinstance(doc, dict) or set(doc) != {"backup", "files"}:
        raise OwnFileError(f"{where}: not a journal (keys backup and files expected)")
    backup = doc["backup"]
    if not isinstance(backup, str) or not _BACKUP.fullmatch(backup):
        raise OwnFileError(f"{where}: backup: not a kucero backup directory under {paths.TMP}")
    files = doc["files"]
    if not isinstance(files, list) or not 0 < len(files) <= MAX_JOURNAL_FILES:
        raise OwnFileError(f"{where}: files: a list of 1 to {MAX_JOURNAL_FILES} entries expected")
    seen: set[str] = set()
    for i, entry in enumerate(files):
        _entry(entry, f"{where}: files[{i}]")
        if entry["path"] in seen:
            raise OwnFileError(f"{where}: files[{i}].path: {entry['path']} appears twice")
        seen.add(entry["path"])
    return doc


def parse_state(data: bytes) -> dict[str, Any]:
    """The state file as ``{"pendingRestarts": [component, ...], "restartRequired": {component:
    {"fingerprint": sha256 or None, "serving": bool}}}``; other keys are dropped."""
    doc = _json(data, paths.STATE)
    if not isinstance(doc, dict):
        raise OwnFileError(f"{paths.STATE}: not a state document (an object expected)")
    pending = doc.get("pendingRestarts", [])
    if not isinstance(pending, list) or not all(
        isinstance(c, str) and c in RESTARTABLE for c in pending
    ):
        raise OwnFileError(
            f"{paths.STATE}: pendingRestarts: a list of {', '.join(sorted(RESTARTABLE))} expected"
        )
    required = doc.get("restartRequired", {})
    if not isinstance(required, dict) or not all(
        c in kubeadm.COMPONENTS
        and isinstance(v, dict)
        and (v.get("fingerprint") is None or _is_sha(v.get("fingerprint")))
        and isinstance(v.get("serving", False), bool)
        for c, v in required.items()
    ):
        raise OwnFileError(
            f"{paths.STATE}: restartRequired: an object of static pods to "
            "{fingerprint, serving} expected"
        )
    out: dict[str, Any] = {"pendingRestarts": sorted(set(pending))}
    previous = _ca_previous(doc.get("caPrevious", {}))
    if previous:
        out["caPrevious"] = previous
    if required:
        out["restartRequired"] = {
            c: {"fingerprint": v.get("fingerprint"), "serving": bool(v.get("serving"))}
            for c, v in required.items()
        }
    return out


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def _ca_previous(value: object) -> dict[str, dict[str, str]]:
    """``caPrevious``: CA name -> {notAfter, sha256} of the certificate a CA renewal replaced
    (kubeconfigs handed out before it work until that notAfter)."""
    names = {ca.name for ca in kubeadm.CAS}
    if not isinstance(value, dict) or not all(
        name in names
        and isinstance(v, dict)
        and set(v) == {"notAfter", "sha256"}
        and isinstance(v["notAfter"], str)
        and _RFC3339.fullmatch(v["notAfter"])
        and _is_sha(v["sha256"])
        for name, v in value.items()
    ):
        raise OwnFileError(
            f"{paths.STATE}: caPrevious: an object of CA names to {{notAfter, sha256}} expected"
        )
    return {name: dict(v) for name, v in value.items()}


_PHASES = ("restart", "rollback")


def parse_restart_journal(data: bytes) -> dict[str, Any]:
    """The restart journal (``paths.RESTART_JOURNAL``), every field checked: the component, the
    manifest it restarts (a normalised absolute path named after it), where it is parked (only
    ``MOVED_MANIFESTS/<component>.yaml``), and during a rollback the backup and the files it
    restores (under kubeadm's directories, as in a journal)."""
    where = paths.RESTART_JOURNAL
    doc = _json(data, where)
    allowed = {"component", "manifest", "phase", "parked", "sha256", "backup", "files"}
    if not isinstance(doc, dict) or not {"component", "manifest", "phase"} <= set(doc) <= allowed:
        raise OwnFileError(f"{where}: not a restart journal")
    component = doc["component"]
    if component not in kubeadm.COMPONENTS:
        raise OwnFileError(f"{where}: component: one of {', '.join(kubeadm.COMPONENTS)} expected")
    if not _normal_path(doc["manifest"]) or not doc["manifest"].endswith(f"/{component}.yaml"):
        raise OwnFileError(f"{where}: manifest: an absolute path to {component}.yaml expected")
    if doc["phase"] not in _PHASES:
        raise OwnFileError(f"{where}: phase: one of {', '.join(_PHASES)} expected")
    if "parked" in doc and doc["parked"] != f"{paths.MOVED_MANIFESTS}/{component}.yaml":
        raise OwnFileError(f"{where}: parked: {paths.MOVED_MANIFESTS}/{component}.yaml expected")
    _check(doc, "sha256", where, _is_sha)
    if "backup" in doc and not (
        isinstance(doc["backup"], str) and _BACKUP.fullmatch(doc["backup"])
    ):
        raise OwnFileError(f"{where}: backup: not a kucero backup directory under {paths.TMP}")
    files = doc.get("files", [])
    if (
        not isinstance(files, list)
        or len(files) > MAX_JOURNAL_FILES
        or not all(_normal_path(f) and f.startswith(WRITABLE_PREFIXES) for f in files)
        or (files and "backup" not in doc)
    ):
        raise OwnFileError(
            f"{where}: files: host paths under {' or '.join(WRITABLE_PREFIXES)} with a backup expected"
        )
    return doc


def _normal_path(path: object) -> bool:
    return (
        isinstance(path, str)
        and path.startswith("/")
        and len(path) <= 4096
        and "\0" not in path
        and not any(p in ("", ".", "..") for p in path[1:].split("/"))
    )


def _json(data: bytes, where: str) -> object:
    try:
        return json.loads(data)
    except RecursionError as e:
        raise OwnFileError(f"{where}: nested too deeply") from e
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise OwnFileError(f"{where}: not valid JSON: {e}") from e


def _entry(entry: object, where: str) -> None:
    if not isinstance(entry, dict):
        raise OwnFileError(f"{where}: an object expected")
    missing = {"path", "sha256", "mode"} - set(entry)
    if missing:
        raise OwnFileError(f"{where}: missing {', '.join(sorted(missing))}")
    path = entry["path"]
    if (
        not isinstance(path, str)
        or len(path) > 4096
        or not path.startswith(WRITABLE_PREFIXES)
        or any(p in ("", ".", "..") for p in path[1:].split("/"))
        or "\0" in path
    ):
        raise OwnFileError(
            f"{where}.path: a normalised host path under {' or '.join(WRITABLE_PREFIXES)} expected"
        )
    _check(entry, "sha256", where, _is_sha, required=True)
    _check(entry, "oldSha256", where, _is_sha)
    _check(entry, "mode", where, _is_mode, required=True)
    _check(entry, "oldMode", where, _is_mode)
    _check(entry, "owner", where, _is_owner)
    _check(entry, "staged", where, _is_staged)


def _check(entry: dict[str, Any], key: str, where: str, ok: Any, required: bool = False) -> None:
    value = entry.get(key)
    if (value is None and required) or (value is not None and not ok(value)):
        raise OwnFileError(f"{where}.{key}: invalid value")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_sha(v: object) -> bool:
    return isinstance(v, str) and bool(_SHA256.fullmatch(v))


def _is_mode(v: object) -> bool:
    return _is_int(v) and 0 <= v <= 0o7777  # type: ignore[operator]


def _is_staged(v: object) -> bool:
    """A temporary's name beside its target (never a path: it cannot point anywhere else)."""
    return isinstance(v, str) and bool(_STAGED.fullmatch(v))


def _is_owner(v: object) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_is_int(i) and 0 <= i < 2**32 for i in v)
