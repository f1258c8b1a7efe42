"""The test cluster's PKI: a CA, the API server's serving certificate, client certificates for
any user (``system:node:cp-1`` in ``system:nodes``...), and the service-account key pair."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    return x509.Name(
        [
            *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _pem_key(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def file_name(user: str, groups: tuple[str, ...] = ()) -> str:
    """A file name for a user's credentials: ``system:node:cp-1`` in ``system:nodes`` ->
    ``system_node_cp-1+system_nodes``."""
    return "+".join(n.replace(":", "_").replace("/", "_") for n in (user, *groups))


class CA:
    """The cluster CA kept in ``pki/ca.crt`` and ``pki/ca.key``."""

    def __init__(self, cert: x509.Certificate, key: Key) -> None:
        self.cert, self.key = cert, key

    @classmethod
    def create(cls, pki: Path) -> CA:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("kubernetes"))
            .issuer_name(_name("kubernetes"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        _write(pki / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
        _write(pki / "ca.key", _pem_key(key), 0o600)
        return cls(cert, key)

    @classmethod
    def load(cls, pki: Path) -> CA:
        cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
        return cls(cert, key)

    def issue(
        self,
        directory: Path,
        name: str,
        cn: str,
        orgs: tuple[str, ...] = (),
        server: bool = False,
        sans: tuple[str, ...] = (),
        days: int = 365,
    ) -> tuple[Path, Path]:
        """Write ``name.crt``/``name.key`` in ``directory``; return their paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn, orgs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            names: list[x509.GeneralName] = []
            for san in sans:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(san)))
                except ValueError:
                    names.append(x509.DNSName(san))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        crt, keyfile = directory / f"{name}.crt", directory / f"{name}.key"
        _write(crt, cert.public_bytes(serialization.Encoding.PEM))
        _write(keyfile, _pem_key(key), 0o600)
        return crt, keyfile


def service_account_keys(pki: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(pki / "sa.key", _pem_key(key), 0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write(pki / "sa.pub", public)
