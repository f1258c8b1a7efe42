"""The metrics endpoint, scraped over plain HTTP (--metrics-secure=false): every metric of
docs/design.md is declared, certificate series follow the latest observation, counters have no
_created series, probes answer."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from reconciler import __version__, metrics
from reconciler.run import endpoint, health

DESIGN = (
    "kucero_certificate_expiration_timestamp_seconds",
    "kucero_renewals_total",
    "kucero_restarts_total",
    "kucero_reconcile_duration_seconds",
    "kucero_policy_valid",
    "kucero_policy_info",
    "kucero_csr_decisions_total",
    "kucero_csr_sign_duration_seconds",
    "kucero_rotation_slot_wait_seconds",
    "kucero_build_info",
)


@pytest.fixture
def served() -> Iterator[tuple[metrics.Metrics, endpoint.Endpoint, list[bool]]]:
    m = metrics.Metrics()
    ready = [False]
    options = endpoint.Options(("127.0.0.1", 0), secure=False)
    server = endpoint.serve(options, m, lambda: ready[0], health.Heartbeats(), None)
    yield m, server, ready
    server.close()


def get(server: endpoint.Endpoint, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def samples(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_every_design_metric_is_declared(
    served: tuple[metrics.Metrics, endpoint.Endpoint, list[bool]],
) -> None:
    _, server, _ = served
    status, text = get(server, "/metrics")
    assert status == 200
    for name in DESIGN:
        assert f"# TYPE {name} " in text, name
    assert 'kucero_build_info{python="' in text and f'version="{__version__}"' in text


def test_certificate_series_follow_the_latest_observation(
    served: tuple[metrics.Metrics, endpoint.Endpoint, list[bool]],
) -> None:
    m, server, _ = served
    rows = [
        {
            "name": "apiserver",
            "kind": "certificate",
            "issuer": "ca",
            "notAfter": "2027-01-01T00:00:00Z",
        },
        {
            "name": "admin.conf",
            "kind": "kubeconfig",
            "issuer": "ca",
            "notAfter": "2027-02-01T00:00:00Z",
        },
        {"name": "broken", "kind": "certificate", "issuer": "ca", "notAfter": None},
    ]
    m.certificates.set("cp-1", metrics.certificate_rows(rows))
    text = get(server, "/metrics")[1]
    assert (
        'kucero_certificate_expiration_timestamp_seconds{issuer="ca",kind="certificate",'
        'name="apiserver",node="cp-1"} 1.7987616e+09' in text  # 2027-01-01
    )
    assert 'name="admin.conf"' in text and 'name="broken"' not in text
    m.certificates.set("cp-1", metrics.certificate_rows(rows[:1]))
    text = get(server, "/metrics")[1]
    assert 'name="apiserver"' in text and 'name="admin.conf"' not in text


def test_counters_have_no_created_series_and_policy_info_has_one_revision(
    served: tuple[metrics.Metrics, endpoint.Endpoint, list[bool]],
) -> None:
    m, server, _ = served
    m.renewals.labels("cp-1", "apiserver", "success").inc()
    m.set_policy(True, "aaaa")
    m.set_policy(True, "bbbb")
    m.set_policy(False, None)  # refused: the revision in force stays
    lines = samples(get(server, "/metrics")[1])
    assert 'kucero_renewals_total{name="apiserver",node="cp-1",result="success"} 1.0' in lines
    assert not [line for line in lines if "_created" in line]
    assert [line for line in lines if line.startswith("kucero_policy_info")] == [
        'kucero_policy_info{revision="bbbb"} 1.0'
    ]
    assert "kucero_policy_valid 0.0" in lines


def test_health_and_readiness(
    served: tuple[metrics.Metrics, endpoint.Endpoint, list[bool]],
) -> None:
    _, server, ready = served
    assert get(server, "/healthz") == (200, "[+]ping ok\nhealthz check passed\n")
    assert get(server, "/readyz")[0] == 503
    ready[0] = True
    assert get(server, "/readyz") == (200, "ok\n")
    assert get(server, "/nope")[0] == 404


@pytest.mark.parametrize(
    ("addr", "parsed"),
    [
        (":8080", ("", 8080)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9", ("::1", 9)),
        ("0", None),
        ("", None),
    ],
)
def test_metrics_addr_is_go_style(addr: str, parsed: tuple[str, int] | None) -> None:
    assert metrics.parse_addr(addr) == parsed


@pytest.mark.parametrize("addr", ["8080", "host:", "host:http", ":70000"])
def test_bad_metrics_addr_is_refused(addr: str) -> None:
    with pytest.raises(ValueError, match="is not host:port"):
        metrics.parse_addr(addr)
