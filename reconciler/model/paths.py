"""kucero's own files on a node, defined once: the lock, the journal, the state file, the
backups, the parked manifests and the temporaries of atomic writes.

All live under kubeadm's working directory ``/etc/kubernetes/tmp`` (kubeadm keeps its own
backups there too), so one host path tells an operator where to look, and the file watcher of
the node daemon knows what to ignore.
"""

from __future__ import annotations

from reconciler.model import kubeadm

TMP = kubeadm.TMP
# Held for the whole pass, so two kucero processes never interleave on one node.
LOCK = f"{TMP}/kucero.lock"
# Present only while a transaction is being applied: its presence means "finish me first".
JOURNAL = f"{TMP}/kucero-journal.json"
# Restarts owed by an earlier pass, and other per-node memory.
STATE = f"{TMP}/kucero-state.json"
# One directory per transaction, the backup in its ``old/`` (an older kucero also staged
# new contents in its ``new/``; they are now staged beside their targets).
BACKUP_PREFIX = "kucero-backup-"
# Written first into every backup directory kucero creates: only a real directory holding it
# is ever pruned or emptied, so a link or a directory named like a backup is never deleted.
BACKUP_MARKER = ".kucero-backup"
MARKER_CONTENT = b"made by kucero; pruned by kucero (backup.retain)\n"
# A static pod manifest parked here during a ``manifest-move`` restart.
MOVED_MANIFESTS = f"{TMP}/kucero-manifests"
# Present only while a static pod restart (or its rollback) is under way: which manifest is out
# and where it goes back, which files a rollback restores from which backup.
RESTART_JOURNAL = f"{TMP}/kucero-restart.json"
# Temporaries of ``write_atomic`` and the staged files of a transaction, always beside their
# target; a SIGKILL can leave one, which recovery removes (in ``WRITTEN_DIRECTORIES``).
TEMP_PREFIX = ".kucero-tmp-"
# Every directory a pass writes a file in (kubeadm's leaves and keys, the kubelet's files,
# kucero's own): where recovery looks for temporaries.
WRITTEN_DIRECTORIES = tuple(
    sorted(
        {
            TMP,
            *(leaf.path.rsplit("/", 1)[0] for leaf in kubeadm.LEAVES),
            *(leaf.key.rsplit("/", 1)[0] for leaf in kubeadm.LEAVES if leaf.key),
            kubeadm.KUBELET_CONF.rsplit("/", 1)[0],
            kubeadm.KUBELET_CONFIG.rsplit("/", 1)[0],
            kubeadm.KUBELET_CLIENT_CURRENT.rsplit("/", 1)[0],
        }
    )
)


def backup_dir(name: str) -> str:
    return f"{TMP}/{name}"
