"""What the kustomize overlays produce, read from `kubectl kustomize` of the test kubectl:
every overlay builds, the generated policy is valid, the image is set in one place, the pods
get exactly the host access the strategies need and nothing more.

Applying the output to a real API server is in test_apply.py; RBAC in test_rbac.py.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

import jsonschema
import pytest
import yaml

from reconciler import flags
from reconciler.decide import policy
from reconciler.node import hostcommands
from tests.deploy import tools

DAEMONSETS = {"kucero-control-plane": "control-plane", "kucero-node": "node"}
NSENTER_CAPABILITIES = ["SYS_ADMIN", "SYS_CHROOT", "SYS_PTRACE"]


def container(daemonset: dict[str, Any]) -> dict[str, Any]:
    (only,) = daemonset["spec"]["template"]["spec"]["containers"]
    return only  # type: ignore[no-any-return]


def host_paths(daemonset: dict[str, Any]) -> dict[str, str]:
    """mountPath -> host path, for the hostPath volumes of the pod."""
    spec = daemonset["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    return {
        m["mountPath"]: volumes[m["name"]]["hostPath"]["path"]
        for m in container(daemonset)["volumeMounts"]
        if "hostPath" in volumes[m["name"]]
    }


def test_there_is_a_default_overlay_and_a_custom_one() -> None:
    assert set(tools.OVERLAYS) == set(tools.NAMESPACES)


@pytest.mark.parametrize("overlay", tools.OVERLAYS)
def test_overlay_builds_and_puts_everything_in_its_namespace(overlay: str) -> None:
    items = tools.objects(f"kustomize/overlays/{overlay}")
    namespace = tools.NAMESPACES[overlay]
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    cluster_scoped |= {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    # Events about Nodes and CSRs live in `default`: the Role and bindings for them stay there.
    in_default = {
        "Role/kucero-events",
        "RoleBinding/kucero-control-plane-events",
        "RoleBinding/kucero-node-events",
    }
    # CA renewal: cluster-info (kube-public) and kubeadm-config (kube-system) are where kubeadm
    # keeps them, whatever kucero's namespace
    pinned = {
        "Role/kucero-ca-cluster-info": "kube-public",
        "RoleBinding/kucero-control-plane-ca-cluster-info": "kube-public",
        "Role/kucero-ca-kubeadm-config": "kube-system",
        "RoleBinding/kucero-control-plane-ca-kubeadm-config": "kube-system",
    }
    for item in items:
        where = item["metadata"].get("namespace")
        key = f"{item['kind']}/{item['metadata']['name']}"
        if item["kind"] in cluster_scoped:
            assert where is None, key
        elif key in in_default:
            assert where == "default", key
        elif key in pinned:
            assert where == pinned[key], key
        else:
            assert where == namespace, f"{key}: {where}"
        for subject in item.get("subjects", []):
            assert subject["namespace"] == namespace, f"{item['metadata']['name']}: {subject}"
    assert {"DaemonSet", "ConfigMap", "ServiceAccount", "ClusterRole", "Role"} <= {
        i["kind"] for i in items
    }
    # what binds kucero's identities to their node (kustomize/base/roles/*-writes.yaml)
    policies = {i["metadata"]["name"] for i in items if i["kind"] == "ValidatingAdmissionPolicy"}
    bound = {
        i["spec"]["policyName"] for i in items if i["kind"] == "ValidatingAdmissionPolicyBinding"
    }
    assert policies == bound == {"kucero-node-writes", "kucero-lease-writes"}


@pytest.mark.parametrize("overlay", tools.OVERLAYS)
def test_policy_in_the_generated_configmap_validates_against_the_schema(overlay: str) -> None:
    items = tools.objects(f"kustomize/overlays/{overlay}")
    configmap = tools.find(items, "ConfigMap", "kucero-policy")  # no hash suffix: watched by name
    assert set(configmap["data"]) == {"policy.yaml"}
    text = configmap["data"]["policy.yaml"]
    jsonschema.Draft202012Validator(policy.schema()).validate(yaml.safe_load(text))
    policy.load(text, source=f"{overlay}/kucero-policy")  # and the checks beyond the schema


def test_default_overlay_ships_policies_default_yaml_unchanged() -> None:
    configmap = tools.find(
        tools.objects("kustomize/overlays/default"), "ConfigMap", "kucero-policy"
    )
    assert configmap["data"]["policy.yaml"] == (tools.REPO / "policies/default.yaml").read_text()


def test_custom_overlay_ships_its_own_policy_file() -> None:
    configmap = tools.find(tools.objects("kustomize/overlays/custom"), "ConfigMap", "kucero-policy")
    own = (tools.KUSTOMIZE / "overlays/custom/policy.yaml").read_text()
    assert configmap["data"]["policy.yaml"] == own


def test_policies_kustomization_alone_builds_the_configmap() -> None:
    (configmap,) = tools.objects("policies")
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["name"] == "kucero-policy"


def test_image_is_set_in_one_place() -> None:
    sources = [p for p in tools.KUSTOMIZE.rglob("*.yaml")]
    images = [
        (p.relative_to(tools.KUSTOMIZE), line.strip())
        for p in sources
        for line in p.read_text().splitlines()
        if re.match(r"\s*(image|newName|newTag|digest):", line)
    ]
    # The DaemonSets name a placeholder; the base maps it to the real image; the custom overlay
    # shows how an overlay overrides it.
    placeholders = [i for i in images if i[1].startswith("image:")]
    assert {str(p) for p, _ in placeholders} == {
        "base/control-plane/daemonset.yaml",
        "base/node/daemonset.yaml",
    }
    assert all(re.match(r"image: kucero\b", line) for _, line in placeholders)
    base = [i for i in images if str(i[0]) == "base/kustomization.yaml"]
    assert [line.split(":")[0] for _, line in base] == ["newName", "newTag"]
    for overlay in tools.OVERLAYS:
        rendered = {
            container(ds)["image"]
            for ds in tools.objects(f"kustomize/overlays/{overlay}")
            if ds["kind"] == "DaemonSet"
        }
        assert len(rendered) == 1, rendered
        assert "kucero:" in rendered.pop()


def test_base_image_tag_is_the_package_version() -> None:
    from reconciler import __version__

    base = yaml.safe_load((tools.KUSTOMIZE / "base/kustomization.yaml").read_text())
    (image,) = base["images"]
    assert image["newTag"] == __version__


def test_no_label_argo_cd_owns_and_no_label_leaking_into_selectors() -> None:
    for overlay in tools.OVERLAYS:
        text = tools.render(f"kustomize/overlays/{overlay}")
        assert "app.kubernetes.io/instance" not in text
        for ds in (
            o for o in tools.objects(f"kustomize/overlays/{overlay}") if o["kind"] == "DaemonSet"
        ):
            selector = ds["spec"]["selector"]["matchLabels"]
            assert selector == {
                "app.kubernetes.io/name": "kucero",
                "app.kubernetes.io/component": DAEMONSETS[ds["metadata"]["name"]],
            }
            assert selector.items() <= ds["spec"]["template"]["metadata"]["labels"].items()


@pytest.fixture(scope="module")
def daemonsets() -> dict[str, dict[str, Any]]:
    items = tools.objects("kustomize/overlays/default")
    return {name: tools.find(items, "DaemonSet", name) for name in DAEMONSETS}


def test_control_plane_daemonset_runs_kucero_run_on_control_plane_nodes_only(
    daemonsets: dict[str, dict[str, Any]],
) -> None:
    ds = daemonsets["kucero-control-plane"]
    spec = ds["spec"]["template"]["spec"]
    assert container(ds)["args"][0] == "run"
    (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term["matchExpressions"] == [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}
    ]
    tolerated = {(t["key"], t["effect"]) for t in spec["tolerations"]}
    assert tolerated == {
        ("node-role.kubernetes.io/control-plane", "NoSchedule"),
        ("node-role.kubernetes.io/master", "NoSchedule"),
    }
    assert host_paths(ds) == {
        "/host/etc/kubernetes": "/etc/kubernetes",
        "/host/var/lib/kubelet": "/var/lib/kubelet",
    }
    assert spec["hostNetwork"] is True  # probes of 127.0.0.1-bound components
    assert spec["serviceAccountName"] == "kucero-control-plane"


def test_node_daemonset_runs_the_node_reconciler_only_and_never_sees_a_ca_key(
    daemonsets: dict[str, dict[str, Any]],
) -> None:
    ds = daemonsets["kucero-node"]
    spec = ds["spec"]["template"]["spec"]
    assert container(ds)["args"][0] == "node"
    assert not any(a.startswith("--policy-configmap") for a in container(ds)["args"])
    (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term["matchExpressions"] == [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}
    ]
    paths = host_paths(ds)
    # /etc/kubernetes/pki comes with /etc/kubernetes: a CA renewal replaces the worker's
    # ca.crt (the kubelet's clientCAFile) by a rename there, which a single-file mount forbids
    assert paths == {
        "/host/etc/kubernetes": "/etc/kubernetes",
        "/host/var/lib/kubelet": "/var/lib/kubelet",
    }
    assert not any(p.endswith(".key") for p in paths.values())
    assert not spec.get("hostNetwork")
    assert spec["serviceAccountName"] == "kucero-node"


@pytest.mark.parametrize("name", DAEMONSETS)
def test_pod_gets_what_nsenter_needs_and_nothing_more(
    daemonsets: dict[str, dict[str, Any]], name: str
) -> None:
    ds = daemonsets[name]
    spec = ds["spec"]["template"]["spec"]
    security = container(ds)["securityContext"]
    assert spec["hostPID"] is True
    assert security["capabilities"] == {"drop": ["ALL"], "add": NSENTER_CAPABILITIES}
    assert security.get("privileged") is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    # Other pods' secrets under the kubelet's pods/ stay hidden.
    hidden = {m["mountPath"] for m in container(ds)["volumeMounts"]}
    assert "/host/var/lib/kubelet/pods" in hidden


@pytest.mark.parametrize("name", DAEMONSETS)
def test_pod_has_probes_resources_and_its_node_name(
    daemonsets: dict[str, dict[str, Any]], name: str
) -> None:
    c = container(daemonsets[name])
    probe = {"port": "metrics", "scheme": "HTTPS"}  # the endpoint speaks only HTTPS
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", **probe}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", **probe}
    (port,) = c["ports"]
    assert f"--metrics-addr=:{port['containerPort']}" in c["args"]
    assert {"cpu", "memory"} <= c["resources"]["requests"].keys()
    assert "memory" in c["resources"]["limits"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "--host-root=/host" in c["args"]
    # /host is not PID 1's root: the kubelet restart is spelt out, kucero's own default
    (restart,) = [a for a in c["args"] if a.startswith("--kubelet-restart-command=")]
    assert shlex.split(restart.partition("=")[2]) == [
        *hostcommands.NSENTER,
        "systemctl",
        "restart",
        "kubelet",
    ]
    crictl = [a for a in c["args"] if a.startswith("--crictl-command=")]
    if name == "kucero-control-plane":  # static pods are only there
        assert [shlex.split(a.partition("=")[2]) for a in crictl] == [
            [*hostcommands.NSENTER, "crictl"]
        ]
    else:
        assert crictl == []


@pytest.mark.parametrize("name", DAEMONSETS)
def test_daemonset_args_are_accepted_by_kucero(
    daemonsets: dict[str, dict[str, Any]], name: str
) -> None:
    args = [
        a.replace("$(POD_NAMESPACE)", "kube-system") for a in container(daemonsets[name])["args"]
    ]
    parsed = flags.parser().parse_args(args)
    assert parsed.host_root == "/host"
    assert parsed.ds_namespace == "kube-system"


def test_every_rbac_rule_says_why() -> None:
    """Each rule of the roles is preceded by a comment (the reason it exists)."""
    for path in sorted((tools.KUSTOMIZE / "base/roles").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if line.strip().startswith("- apiGroups:"):
                assert lines[number - 1].strip().startswith("#"), f"{path.name}:{number + 1}"


def test_nothing_grants_secrets_wildcards_or_escalation() -> None:
    for overlay in tools.OVERLAYS:
        for item in tools.objects(f"kustomize/overlays/{overlay}"):
            for rule in item.get("rules", []):
                resources = rule.get("resources", [])  # none for a nonResourceURLs rule
                assert "*" not in rule["verbs"] and "*" not in resources, rule
                assert "secrets" not in resources and "*" not in rule.get("nonResourceURLs", [])
                assert not {"escalate", "bind", "impersonate", "delete", "deletecollection"} & set(
                    rule["verbs"]
                ), rule
