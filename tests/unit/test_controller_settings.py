"""`kucero controller` flags become one frozen settings object; every bad value is reported at
once, before anything connects."""

from __future__ import annotations

import dataclasses

import pytest

from reconciler import cli, config, flags


def test_defaults_are_the_seed_and_client_go_values() -> None:
    settings = config.settings_from(flags.parser().parse_args(["controller"])).controller
    assert settings.election.namespace == "kube-system"
    assert settings.election.name == "kucero-leader-election"
    assert (settings.election.lease_duration, settings.election.renew_deadline) == (15.0, 10.0)
    assert settings.election.retry_period == 2.0
    assert (settings.policy_namespace, settings.policy_name) == ("kube-system", "kucero-policy")
    assert settings.metrics_addr == ("", 8080)
    assert settings.kubeconfig is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.kubeconfig = "x"


def test_every_bad_value_is_reported_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        [
            "controller",
            "--leader-election-lease-duration=2s",
            "--leader-election-renew-deadline=5s",
            "--metrics-addr=nowhere",
            "--policy-configmap=a/b/c",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "--leader-election-retry-period < --leader-election-renew-deadline" in err
    assert "--metrics-addr: 'nowhere' is not host:port" in err
    assert "--policy-configmap: 'a/b/c' is not namespace/name" in err


def test_bare_configmap_name_is_in_the_ds_namespace() -> None:
    args = ["controller", "--ds-namespace=kucero", "--policy-configmap=pol", "--metrics-addr=0"]
    settings = config.settings_from(flags.parser().parse_args(args)).controller
    assert (settings.policy_namespace, settings.policy_name) == ("kucero", "pol")
    assert settings.election.namespace == "kucero" and settings.metrics_addr is None
