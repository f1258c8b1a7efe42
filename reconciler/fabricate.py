"""Build kubeadm-like node trees on disk, for the demo, the tests and the benchmarks.

The profiles follow what ``kubeadm init phase certs all`` and ``kubeadm init phase kubeconfig
all`` write (subjects, SANs, key usages, file names, PEM containers, kubeconfig layout), so the
reconciler meets the same files it meets on a real node. The test suite also builds trees with
the real kubeadm binary and cross-checks the two.

``expiries`` maps a kubeadm name (or ``kubelet-client``, or a CA's name: ``ca``,
``front-proxy-ca``, ``etcd-ca``) to a lifetime left from ``now``, which is how the demo and tests
put some certificates inside the renewal window. ``ca_from`` reuses the CAs (certificates and
keys) of another tree, as every node of one cluster shares them.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from reconciler.decide import pki, yamldoc
from reconciler.model import kubeadm

YEAR = dt.timedelta(days=365)
TEN_YEARS = dt.timedelta(days=3650)


@dataclasses.dataclass(frozen=True)
class Options:
    node_name: str = "cp-1"
    node_ip: str = "10.0.0.11"
    key_type: str = "rsa"  # "rsa" (2048) or "ecdsa" (P-256)
    etcd: bool = True  # stacked etcd certificates
    control_plane: bool = True  # False: a worker (kubelet files only)
    embedded_kubelet_conf: bool = True  # kubeadm < 1.17 style kubelet.conf
    kubelet_config_rotation: bool = False  # rotateCertificates/serverTLSBootstrap present and true
    external_ca: bool = False  # remove ca.key (kubeadm "external CA" mode)
    expiries: tuple[tuple[str, dt.timedelta], ...] = ()
    # ports the manifests name, by component (and "etcd-peer"); kubeadm's defaults otherwise
    ports: tuple[tuple[str, int], ...] = ()
    # a tree whose CAs this one shares (one cluster); "" makes new ones
    ca_from: str = ""


def new_key(key_type: str) -> pki.PrivateKey:
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_ca(
    cn: str, now: dt.datetime, key_type: str, lifetime: dt.timedelta = TEN_YEARS
) -> tuple[x509.Certificate, pki.PrivateKey]:
    key = new_key(key_type)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now - dt.timedelta(minutes=5), now + lifetime - TEN_YEARS))
        .not_valid_after(now + lifetime)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, True, False, False, False), critical=True
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, pki.signature_hash_for(key))
    )
    return cert, key


def make_leaf(
    ca: tuple[x509.Certificate, pki.PrivateKey],
    cn: str,
    orgs: tuple[str, ...],
    usages: tuple[x509.ObjectIdentifier, ...],
    sans: tuple[str, ...],
    now: dt.datetime,
    lifetime: dt.timedelta,
    key_type: str,
) -> tuple[x509.Certificate, pki.PrivateKey]:
    ca_cert, ca_key = ca
    key = new_key(key_type)
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now - dt.timedelta(minutes=5), now + lifetime - YEAR))
        .not_valid_after(now + lifetime)
        # kubeadm's NewSignedCert sets keyEncipherment for every leaf, ECDSA ones included
        # (cmd/kubeadm/app/util/pkiutil/pki_helpers.go, v1.37.2)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_authority_key_id(ca_cert), critical=False)
    )
    if sans:
        names: list[x509.GeneralName] = []
        for san in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                names.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, pki.signature_hash_for(ca_key)), key


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


SERVER = (ExtendedKeyUsageOID.SERVER_AUTH,)
CLIENT = (ExtendedKeyUsageOID.CLIENT_AUTH,)
BOTH = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)


def build(root: str | Path, now: dt.datetime, options: Options = Options()) -> Path:
    """Write a kubeadm-like node tree under ``root`` and return it."""
    root = Path(root)
    expiries = dict(options.expiries)
    kt = options.key_type

    def life(name: str) -> dt.timedelta:
        return expiries.get(name, YEAR)

    def ca_pair(cn: str, name: str, base: str) -> tuple[x509.Certificate, pki.PrivateKey]:
        if options.ca_from:
            shared = Path(options.ca_from) / kubeadm.PKI.lstrip("/")
            cert = pki.load_cert((shared / f"{base}.crt").read_bytes())
            return cert, pki.load_key((shared / f"{base}.key").read_bytes())
        return make_ca(cn, now, kt, expiries.get(name, TEN_YEARS))

    ca = ca_pair("kubernetes", "ca", "ca")
    _write_pair(root, "ca", ca)
    if options.control_plane:
        node, ip = options.node_name, options.node_ip
        fp = ca_pair("front-proxy-ca", "front-proxy-ca", "front-proxy-ca")
        _write_pair(root, "front-proxy-ca", fp)
        apiserver_sans = (
            node,
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "10.96.0.1",
            ip,
        )
        leaves: dict[str, tuple[Any, ...]] = {
            "apiserver": (ca, "kube-apiserver", (), SERVER, apiserver_sans),
            "apiserver-kubelet-client": (
                ca,
                "kube-apiserver-kubelet-client",
                ("kubeadm:cluster-admins",),
                CLIENT,
                (),
            ),
            "front-proxy-client": (fp, "front-proxy-client", (), CLIENT, ()),
        }
        if options.etcd:
            etcd = ca_pair("etcd-ca", "etcd-ca", "etcd/ca")
            _write_pair(root, "etcd/ca", etcd)
            etcd_sans = (node, "localhost", ip, "127.0.0.1", "::1")
            leaves.update(
                {
                    "apiserver-etcd-client": (etcd, "kube-apiserver-etcd-client", (), CLIENT, ()),
                    "etcd-server": (etcd, node, (), BOTH, etcd_sans),
                    "etcd-peer": (etcd, node, (), BOTH, etcd_sans),
                    "etcd-healthcheck-client": (
                        etcd,
                        "kube-etcd-healthcheck-client",
                        (),
                        CLIENT,
                        (),
                    ),
                }
            )
        for name, (issuer, cn, orgs, usages, sans) in leaves.items():
            pair = make_leaf(issuer, cn, orgs, usages, sans, now, life(name), kt)
            _write_pair(
                root,
                kubeadm.LEAF_BY_NAME[name]
                .path.removeprefix(kubeadm.PKI + "/")
                .removesuffix(".crt"),
                pair,
            )
        confs = {
            "admin.conf": ("kubernetes-admin", ("kubeadm:cluster-admins",)),
            "super-admin.conf": ("kubernetes-super-admin", ("system:masters",)),
            "controller-manager.conf": ("system:kube-controller-manager", ()),
            "scheduler.conf": ("system:kube-scheduler", ()),
        }
        for name, (cn, orgs) in confs.items():
            pair = make_leaf(ca, cn, orgs, CLIENT, (), now, life(name), kt)
            _write(
                root,
                f"{kubeadm.KUBECONFIG_DIR}/{name}",
                kubeconfig_text(ca[0], pair, cn, ip),
                0o600,
            )
        for component in kubeadm.COMPONENTS:
            if component == "etcd" and not options.etcd:
                continue
            manifest = _manifest(component, options.node_ip, dict(options.ports))
            _write(root, kubeadm.manifest(component), manifest, 0o600)
        _write(root, f"{kubeadm.PKI}/sa.key", pki.key_pem(new_key("rsa")), 0o600)
    # kubelet files, on every node
    node_cn = f"system:node:{options.node_name}"
    client = make_leaf(ca, node_cn, ("system:nodes",), CLIENT, (), now, life("kubelet-client"), kt)
    pem = pki.cert_pem(client[0]) + pki.key_pem(client[1])
    _write(root, "/var/lib/kubelet/pki/kubelet-client-2026-01-01-00-00-00.pem", pem, 0o600)
    # an absolute link, as the kubelet's certificate store makes it
    (root / "var/lib/kubelet/pki/kubelet-client-current.pem").symlink_to(
        "/var/lib/kubelet/pki/kubelet-client-2026-01-01-00-00-00.pem"
    )
    if options.embedded_kubelet_conf:
        conf = kubeconfig_text(ca[0], client, node_cn, options.node_ip)
    else:
        conf = kubeconfig_text(
            ca[0], None, node_cn, options.node_ip, files=kubeadm.KUBELET_CLIENT_CURRENT
        )
    _write(root, kubeadm.KUBELET_CONF, conf, 0o600)
    _write(
        root, kubeadm.KUBELET_CONFIG, kubelet_config_text(options.kubelet_config_rotation), 0o644
    )
    if options.external_ca:
        (root / "etc/kubernetes/pki/ca.key").unlink()
    return root


def kubeconfig_text(
    ca: x509.Certificate,
    pair: tuple[x509.Certificate, pki.PrivateKey] | None,
    user: str,
    server_ip: str,
    files: str | None = None,
) -> bytes:
    user_entry: dict[str, str]
    if pair is not None:
        user_entry = {
            "client-certificate-data": base64.b64encode(pki.cert_pem(pair[0])).decode(),
            "client-key-data": base64.b64encode(pki.key_pem(pair[1])).decode(),
        }
    else:
        assert files is not None
        user_entry = {"client-certificate": files, "client-key": files}
    context = f"{user}@kubernetes"
    doc = {
        "apiVersion": "v1",
        "clusters": [
            {
                "cluster": {
                    "certificate-authority-data": base64.b64encode(pki.cert_pem(ca)).decode(),
                    "server": f"https://{server_ip}:6443",
                },
                "name": "kubernetes",
            }
        ],
        "contexts": [{"context": {"cluster": "kubernetes", "user": user}, "name": context}],
        "current-context": context,
        "kind": "Config",
        "preferences": {},
        "users": [{"name": user, "user": user_entry}],
    }
    return yamldoc.dump(doc).encode()


def kubelet_config_text(rotation: bool) -> bytes:
    text = """\
apiVersion: kubelet.config.k8s.io/v1beta1
# written by kubeadm; kucero must keep this comment
authentication:
  anonymous:
    enabled: false
  webhook:
    cacheTTL: 0s
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
cgroupDriver: systemd
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
kind: KubeletConfiguration
staticPodPath: /etc/kubernetes/manifests
"""
    if rotation:
        text += "rotateCertificates: true\nserverTLSBootstrap: true\n"
    return text.encode()


PORTS = {
    "kube-apiserver": 6443,
    "kube-controller-manager": 10257,
    "kube-scheduler": 10259,
    "etcd": 2379,
    "etcd-peer": 2380,
}


def _flags(component: str, ip: str, ports: dict[str, int]) -> list[str]:
    """The flags kubeadm gives each component that name files or ports."""
    port = {**PORTS, **ports}
    p, e = kubeadm.PKI, f"{kubeadm.PKI}/etcd"
    if component == "kube-apiserver":
        return [
            f"--advertise-address={ip}",
            f"--client-ca-file={p}/ca.crt",
            f"--etcd-cafile={e}/ca.crt",
            f"--etcd-certfile={p}/apiserver-etcd-client.crt",
            f"--etcd-keyfile={p}/apiserver-etcd-client.key",
            f"--etcd-servers=https://127.0.0.1:{port['etcd']}",
            f"--kubelet-client-certificate={p}/apiserver-kubelet-client.crt",
            f"--kubelet-client-key={p}/apiserver-kubelet-client.key",
            f"--proxy-client-cert-file={p}/front-proxy-client.crt",
            f"--proxy-client-key-file={p}/front-proxy-client.key",
            f"--requestheader-client-ca-file={p}/front-proxy-ca.crt",
            f"--secure-port={port[component]}",
            f"--service-account-key-file={p}/sa.pub",
            f"--service-account-signing-key-file={p}/sa.key",
            f"--tls-cert-file={p}/apiserver.crt",
            f"--tls-private-key-file={p}/apiserver.key",
        ]
    if component == "etcd":
        return [
            f"--cert-file={e}/server.crt",
            f"--key-file={e}/server.key",
            f"--listen-client-urls=https://127.0.0.1:{port['etcd']},https://{ip}:{port['etcd']}",
            f"--listen-peer-urls=https://127.0.0.1:{port['etcd-peer']}",
            f"--peer-cert-file={e}/peer.crt",
            f"--peer-key-file={e}/peer.key",
            f"--peer-trusted-ca-file={e}/ca.crt",
            f"--trusted-ca-file={e}/ca.crt",
        ]
    conf = "controller-manager.conf" if component == "kube-controller-manager" else "scheduler.conf"
    common = [
        f"--authentication-kubeconfig=/etc/kubernetes/{conf}",
        f"--authorization-kubeconfig=/etc/kubernetes/{conf}",
        "--bind-address=127.0.0.1",
        f"--kubeconfig=/etc/kubernetes/{conf}",
        f"--secure-port={port[component]}",
    ]
    if component == "kube-scheduler":
        return common
    # kubeadm's controller manager also loads the CAs: it signs CSRs with the cluster CA and
    # publishes --root-ca-file as every namespace's kube-root-ca.crt
    return [
        *common,
        f"--client-ca-file={p}/ca.crt",
        f"--cluster-signing-cert-file={p}/ca.crt",
        f"--cluster-signing-key-file={p}/ca.key",
        f"--requestheader-client-ca-file={p}/front-proxy-ca.crt",
        f"--root-ca-file={p}/ca.crt",
        f"--service-account-private-key-file={p}/sa.key",
    ]


def _mounts(component: str) -> list[tuple[str, str]]:
    """(volume name, host path) mounted at the same path, as kubeadm does."""
    if component == "etcd":
        return [("etcd-certs", f"{kubeadm.PKI}/etcd")]
    out = [("k8s-certs", kubeadm.PKI)]
    if component != "kube-apiserver":
        conf = "controller-manager" if component == "kube-controller-manager" else "scheduler"
        out = [("kubeconfig", f"/etc/kubernetes/{conf}.conf")] + (
            out if component == "kube-controller-manager" else []
        )
    return out


def _manifest(component: str, ip: str = "10.0.0.11", ports: dict[str, int] | None = None) -> bytes:
    mounts = _mounts(component)
    return yamldoc.dump(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": component,
                "namespace": "kube-system",
                "labels": {"component": component, "tier": "control-plane"},
            },
            "spec": {
                "hostNetwork": True,
                "containers": [
                    {
                        "name": component,
                        "image": f"registry.k8s.io/{component}:v1.34.0",
                        "command": [component, *_flags(component, ip, ports or {})],
                        "volumeMounts": [{"name": n, "mountPath": h} for n, h in mounts],
                    }
                ],
                "volumes": [{"name": n, "hostPath": {"path": h}} for n, h in mounts],
            },
        },
    ).encode()


def _write_pair(root: Path, base: str, pair: tuple[x509.Certificate, pki.PrivateKey]) -> None:
    _write(root, f"{kubeadm.PKI}/{base}.crt", pki.cert_pem(pair[0]), 0o644)
    _write(root, f"{kubeadm.PKI}/{base}.key", pki.key_pem(pair[1]), 0o600)


def _write(root: Path, host_path: str, data: bytes, mode: int) -> None:
    path = root / host_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
