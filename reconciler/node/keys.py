"""Key generation: the one place that draws randomness for a renewal.

Pure code (``decide.pki``) builds certificates from keys and serials it is given; this module
makes them.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from reconciler.decide import pki


def new_key_like(public_key: pki.PublicKey) -> pki.PrivateKey:
    """A fresh private key of the same algorithm and size (RSA bits, EC curve)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return rsa.generate_private_key(public_exponent=65537, key_size=public_key.key_size)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return ec.generate_private_key(public_key.curve)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return ed25519.Ed25519PrivateKey.generate()
    raise pki.PKIError(f"unsupported key type {type(public_key).__name__}")


def new_serial() -> int:
    """A random positive serial number of at most 20 octets (RFC 5280 §4.1.2.2)."""
    return x509.random_serial_number()
