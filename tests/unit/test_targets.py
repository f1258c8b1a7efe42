"""The plan refuses writes through shared or CA files, decided from ``Observed`` values alone
(no disk): the identities observe recorded are all it needs."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from reconciler.decide import plan, policy
from reconciler.model import actions, hoststate
from reconciler.node import host, observe

DUE = {"apiserver": dt.timedelta(days=5), "admin.conf": dt.timedelta(days=5)}
SPEC = policy.resolve(policy.load("apiVersion: kucero.io/v1alpha1\nkind: RotationPolicy\n"), {})


def _same(seen: hoststate.Observed, path: str, as_path: str) -> hoststate.Observed:
    identities = dict(seen.identities)
    identities[path] = identities[as_path]
    return dataclasses.replace(seen, identities=identities)


@pytest.mark.parametrize(
    ("path", "as_path", "target", "reason"),
    [
        pytest.param(
            "/etc/kubernetes/pki/apiserver.key",
            "/etc/kubernetes/pki/front-proxy-client.key",
            "apiserver",
            actions.Reason.SHARED_FILE,
            id="key-shared-with-a-leaf-that-is-not-due",
        ),
        pytest.param(
            "/etc/kubernetes/admin.conf",
            "/etc/kubernetes/pki/ca.key",
            "admin.conf",
            actions.Reason.CA_FILE,
            id="kubeconfig-that-is-the-ca-key",
        ),
        pytest.param(
            "/etc/kubernetes/pki/apiserver.crt",
            "/etc/kubernetes/pki/apiserver.key",
            "apiserver",
            actions.Reason.SHARED_FILE,
            id="certificate-and-key-one-file",
        ),
    ],
)
def test_plan_refuses_a_write_target_another_owner_uses(
    make_tree: Any, now: dt.datetime, path: str, as_path: str, target: str, reason: actions.Reason
) -> None:
    seen = observe.observe(host.Host(make_tree(key_type="ecdsa", expiries=DUE)))
    assert actions.Action in {type(a) for a in plan.plan(SPEC, seen, now).actions}
    before = {a.target for a in plan.plan(SPEC, seen, now).of(actions.ActionKind.RENEW)}
    assert target in before
    the_plan = plan.plan(SPEC, _same(seen, path, as_path), now)
    assert target not in {a.target for a in the_plan.of(actions.ActionKind.RENEW)}
    refused = [f for f in the_plan.findings if f.target == target]
    assert [(f.reason, f.severity) for f in refused] == [(reason, actions.Severity.ERROR)]
    # everything else still planned
    assert {a.target for a in the_plan.of(actions.ActionKind.RENEW)} == before - {target}
