"""The node daemon's file watcher: one ``watchfiles.watch`` call over every path it cares about.

It watches the host's ``etc/kubernetes`` and ``var/lib/kubelet`` (when present) and, with
``--policy FILE``, the policy file's directory, and calls ``on_change(kind)`` with ``"host"`` or
``"policy"`` after a debounced batch. Edge cases, each learnt the hard way (docs/pitfalls.md):

- One ``watch()`` call for all paths: each call costs an inotify instance (128 per user).
- A ConfigMap volume updates by swapping a ``..data`` symlink, and the events do not name the
  file: the policy's directory is watched, and the caller re-reads and compares the content.
- kucero's own files are ignored: its tmp directory (lock, journal, state, backups, parked
  manifests) and the temporaries of atomic writes. The renames that install a renewed file
  are kucero's too; the daemon drops batches that arrive while a pass runs or within one
  debounce period after it (``quiet``), because that pass ends by observing the host again.
- Pod volumes under ``var/lib/kubelet`` (projected tokens are rewritten hourly) are not ours to
  care about and would only cause needless passes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import watchfiles

from reconciler.model import kubeadm, paths

log = logging.getLogger(__name__)
# watchfiles logs every batch at INFO; the daemon says what it does with them itself
logging.getLogger("watchfiles").setLevel(logging.WARNING)

# ms: certificate and key are written within milliseconds of each other; 300 ms is one batch.
DEBOUNCE_MS = 300
# ms: how often the Rust side checks the stop event.
STEP_MS = 100
# Under var/lib/kubelet: what changes on its own and says nothing about certificates.
_KUBELET_NOISE = ("pods", "plugins", "plugins_registry", "device-plugins", "pod-resources")


class Watcher:
    def __init__(
        self,
        host_root: Path,
        policy_file: Path | None,
        on_change: Callable[[str], None],
        stop: threading.Event,
    ) -> None:
        self._root = host_root
        self._policy_dir = policy_file.parent.resolve() if policy_file else None
        self._on_change = on_change
        self._stop = stop
        self._ignored_dirs = [str(host_root / p.lstrip("/")) for p in (paths.TMP,)] + [
            str(host_root / "var/lib/kubelet" / n) for n in _KUBELET_NOISE
        ]

    def paths(self) -> list[Path]:
        wanted = [self._root / kubeadm.KUBECONFIG_DIR.lstrip("/"), self._root / "var/lib/kubelet"]
        found = [p for p in wanted if p.is_dir()]
        if self._policy_dir is not None:
            found.append(self._policy_dir)
        return found

    def relevant(self, _change: watchfiles.Change, path: str) -> bool:
        if os.path.basename(path).startswith(paths.TEMP_PREFIX):
            return False
        return not any(path == d or path.startswith(d + os.sep) for d in self._ignored_dirs)

    def kinds(self, changes: Iterable[tuple[watchfiles.Change, str]]) -> set[str]:
        out = set()
        for _, path in changes:
            if self._policy_dir is not None and path.startswith(str(self._policy_dir)):
                out.add("policy")
            else:
                out.add("host")
        return out

    def run(self) -> None:
        """Blocks until ``stop`` is set; restarts the watch if a watched directory vanished."""
        while not self._stop.is_set():
            watched = self.paths()
            if not watched:
                self._stop.wait(5.0)
                continue
            try:
                for changes in watchfiles.watch(
                    *watched,
                    watch_filter=self.relevant,
                    debounce=DEBOUNCE_MS,
                    step=STEP_MS,
                    stop_event=self._stop,
                    raise_interrupt=False,
                ):
                    for kind in self.kinds(changes):
                        self._on_change(kind)
            except (OSError, RuntimeError) as e:  # a watched directory was removed
                log.warning("file watch stopped (%s); watching again in 5 s", e)
                self._stop.wait(5.0)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="filewatch", daemon=True)
        thread.start()
        return thread
