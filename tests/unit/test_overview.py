"""``kucero status`` rows (``decide.overview``): what one line per Node says, from the values of
its ``kucero.io/desired`` and ``kucero.io/status`` annotations, at a fixed ``now``."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from reconciler.decide import desired, overview, policy, status

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
HEAD = "apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"


def desired_text(body: str = "") -> str:
    return desired.encode(policy.resolve(policy.load(HEAD + body), {}))


DESIRED = desired_text()  # renewBefore 720h
REVISION = json.loads(DESIRED)["revision"]
OTHER = desired_text("spec: {kubeadm: {renewBefore: 1440h}}\n")


def status_text(
    phase: str = "Converged",
    revision: str | None = REVISION,
    certificates: dict[str, str] | None = None,
    message: str = "",
    last: str | None = "2026-05-01T00:00:00Z",
) -> str:
    certs = {"apiserver": "2027-05-01T00:00:00Z", "ca": "2030-01-01T00:00:00Z"}
    return json.dumps(
        {
            "revision": revision,
            "phase": phase,
            "message": message,
            "lastRotation": last,
            "certificates": certs if certificates is None else certificates,
        }
    )


@pytest.mark.parametrize(
    ("desired_value", "status_value", "expected"),
    [
        pytest.param(
            DESIRED,
            status_text(),
            {"phase": "Converged", "upToDate": True, "nextRenewal": "2027-04-01T00:00:00Z"},
            id="converged-at-the-desired-revision-renews-renewBefore-ahead-of-notAfter",
        ),
        pytest.param(
            OTHER,
            status_text(),
            {"upToDate": False, "nextRenewal": "2027-03-02T00:00:00Z"},
            id="an-older-revision-is-not-up-to-date-and-the-desired-renewBefore-counts",
        ),
        pytest.param(
            DESIRED,
            status_text("Failed", message="restart-static-pod kube-apiserver: rolled-back"),
            {
                "phase": "Failed",
                "upToDate": False,
                "message": "restart-static-pod kube-apiserver: rolled-back",
            },
            id="failed-at-the-desired-revision-is-not-up-to-date-and-says-why",
        ),
        pytest.param(
            DESIRED,
            status_text(certificates={"ca": "2030-01-01T00:00:00Z"}, last=None),
            {"nextRenewal": None, "nextRenewalCertificate": None, "lastRotation": None},
            id="a-worker-with-only-CAs-has-no-next-renewal",
        ),
        pytest.param(
            DESIRED,
            status_text(
                certificates={
                    "apiserver": "2027-05-01T00:00:00Z",
                    "etcd-peer": "2026-06-10T00:00:00Z",
                }
            ),
            {"nextRenewal": "2026-05-11T00:00:00Z", "nextRenewalCertificate": "etcd-peer"},
            id="the-earliest-certificate-is-the-next-renewal",
        ),
        pytest.param(
            None,
            None,
            {"phase": "<none>", "upToDate": None, "desiredError": "kucero.io/desired is not set"},
            id="a-node-kucero-never-reached",
        ),
        pytest.param(
            '{"revision": 1}',
            "not json",
            {"phase": "<invalid>", "upToDate": None, "desiredRevision": None},
            id="hand-edited-annotations-are-shown-invalid-never-trusted",
        ),
    ],
)
def test_row(
    desired_value: str | None, status_value: str | None, expected: dict[str, object]
) -> None:
    row = overview.to_dict(overview.row("cp-1", desired_value, status_value))
    assert {k: row[k] for k in expected} == expected


def test_table_is_one_line_per_node_with_relative_times_and_escaped_messages() -> None:
    rows = [
        overview.row("cp-1", DESIRED, status_text()),
        overview.row(
            "w-1", DESIRED, status_text("Failed", message="evil\x1b[2J" + "x" * 200, last=None)
        ),
    ]
    lines = overview.table(rows, NOW).splitlines()
    assert lines[0].split() == [
        "NODE", "PHASE", "REVISION", "UP-TO-DATE", "NEXT", "RENEWAL", "LAST", "ROTATION", "MESSAGE",
    ]  # fmt: skip
    assert lines[1].split()[:9] == [
        "cp-1", "Converged", REVISION, "yes", "2027-04-01", "(in", "303d,", "apiserver)", "2026-05-01",
    ]  # fmt: skip
    assert "(31d ago)" in lines[1]
    assert "\x1b" not in lines[2] and "\\x1b[2J" in lines[2] and lines[2].endswith("...")
    assert len(lines) == 3


def test_a_certificate_inside_its_renewal_window_is_due() -> None:
    row = overview.row(
        "cp-1", DESIRED, status_text(certificates={"apiserver": "2026-06-20T00:00:00Z"})
    )
    assert "2026-05-21 (due, apiserver)" in overview.table([row], NOW)


def test_status_annotation_times_parse_only_with_a_zone() -> None:
    assert status.parse_time("2026-06-01T12:00:00Z") == NOW
    assert status.parse_time("2026-06-01T12:00:00") is None
    assert status.parse_time("soon") is None
