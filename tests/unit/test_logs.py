"""Logs an operator reads and a log search indexes: ``--log-format text|json`` and
``--log-level`` on a real ``kucero node --once`` pass, fields, escaping, threads."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from reconciler import cli, logs

DAY = dt.timedelta(days=1)
REAL_NOW = dt.datetime.now(dt.UTC)
POLICY = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\nspec:\n  kubeadm: {restart: none}\n"
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

log = logging.getLogger("tests.logs")


def node_once(root: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``kucero node --once`` as an operator runs it: its own process, logs on stderr."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    argv = [sys.executable, "-m", "reconciler", "node", "--once", "--host-root", str(root)]
    argv += ["--policy", str(policy), "--kubelet-restart-command", "true", *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_json_logs_of_a_real_pass_are_one_object_per_line_with_the_fields_a_search_needs(
    make_tree: Any, tmp_path: Path
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"apiserver": 3 * DAY})
    done = node_once(root, tmp_path, "--log-format", "json", "-o", "json")
    assert done.returncode == 0, done.stderr
    revision = json.loads(done.stdout)["revision"]
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert lines, done.stderr
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        assert RFC3339_UTC.match(line["time"]), line["time"]
        assert line["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        # every line of the pass names the node (from the kubelet's certificate) and revision
        assert line["node"] == "cp-1" and line["revision"] == revision, line
    renewed = [line for line in lines if line.get("action") == "renew"]
    assert [(r["certificate"], r["reason"], r["level"]) for r in renewed] == [
        ("apiserver", "NearingExpiry", "INFO")
    ]
    kubelet = [line for line in lines if line.get("action") == "restart-kubelet"]
    assert kubelet and kubelet[0]["component"] == "kubelet"
    (summary,) = [line for line in lines if line["logger"] == "reconciler.run.once"]
    assert summary["converged"] is True and summary["message"].startswith("pass converged")


def test_text_logs_of_a_real_pass_read_as_one_line_per_record(
    make_tree: Any, tmp_path: Path
) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"apiserver": 3 * DAY})
    done = node_once(root, tmp_path)
    assert done.returncode == 0, done.stderr
    (renew,) = [line for line in done.stderr.splitlines() if " renew " in line]
    when, level, logger, rest = renew.split(" ", 3)
    assert RFC3339_UTC.match(when) and level == "INFO" and logger == "reconciler.node.execute:"
    assert rest.startswith("renew apiserver: done (backup in /etc/kubernetes/tmp/kucero-backup-")
    assert rest.endswith(" node=cp-1 certificate=apiserver action=renew reason=NearingExpiry")
    assert "converged to policy revision" in done.stdout  # the table stays on stdout


def test_log_level_warning_leaves_out_the_info_lines(make_tree: Any, tmp_path: Path) -> None:
    root = make_tree(now=REAL_NOW, key_type="ecdsa", expiries={"apiserver": 3 * DAY})
    done = node_once(root, tmp_path, "--log-level", "warning")
    assert done.returncode == 0, done.stderr
    assert " INFO " not in done.stderr


def test_an_unknown_log_level_or_format_is_a_usage_error_naming_the_flag(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for argv in (["--log-level", "loud"], ["--log-format", "xml"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(["validate-policy", *argv, "x.yaml"])
        assert exited.value.code == 2
        assert argv[0] in capsys.readouterr().err
    monkeypatch.setenv("KUCERO_LOG_LEVEL", "chatty")  # the default comes from the environment
    with pytest.raises(SystemExit):
        cli.main(["validate-policy", "x.yaml"])
    assert "--log-level" in capsys.readouterr().err


@pytest.mark.parametrize("log_format", logs.FORMATS)
def test_names_from_hosts_cannot_forge_a_second_log_line(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = "cp-1\n2026-01-01T00:00:00.000Z ERROR forged: \x1b[2J\u2028x"
    with logs.setup(log_format, "info"):
        log.warning("renewing %s", hostile, extra={"certificate": hostile})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert "\x1b" not in lines[0] and "\u2028" not in lines[0]
    if log_format == "json":
        record = json.loads(lines[0])
        assert record["certificate"] == hostile and record["message"] == f"renewing {hostile}"
    else:
        assert "\\x0a" in lines[0] and "\\x1b" in lines[0]


def test_fields_of_a_block_reach_threads_only_when_carried(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def work(tag: str) -> None:
        log.info("from %s", tag)

    with logs.setup("json", "info"), logs.fields(node="cp-1", revision=None):
        log.info("main", extra={"certificate": "apiserver"})
        for target in (logs.carried(work), work):
            thread = threading.Thread(
                target=target, args=("carried" if target is not work else "bare",)
            )
            thread.start()
            thread.join()
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["message"], r.get("node"), r.get("certificate")) for r in records] == [
        ("main", "cp-1", "apiserver"),
        ("from carried", "cp-1", None),
        ("from bare", None, None),
    ]
    assert all("revision" not in r for r in records)  # a None field is left out


def test_setup_puts_the_root_logger_back_as_it_found_it() -> None:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    with logs.setup("json", "debug"):
        assert root.level == logging.DEBUG and len(root.handlers) == len(handlers) + 1
    assert root.level == level and root.handlers == handlers
