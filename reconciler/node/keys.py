"""Key generation: the one place that draws randomness for a renewal.

Pure code (``decide.pki``) builds certificates from keys and serials it is given; this module
makes them.

A pass renews up to eleven certificates, each with a new key. RSA key generation is the bulk
of a pass (about 37 ms a key at 2048 bits, 470 ms at 4096) and ``cryptography`` releases the
GIL while it searches for primes, so ``new_keys_like`` generates a pass's RSA keys in threads,
one per usable core. EC and Ed25519 keys take microseconds and do not release the GIL: they
are made in the calling thread, where a thread pool would only add its start-up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

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


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which a container's cpuset narrows)."""
    return len(os.sched_getaffinity(0)) or 1


def new_keys_like(public_keys: Mapping[str, pki.PublicKey]) -> dict[str, pki.PrivateKey]:
    """A fresh key like each of ``public_keys``, by the same names; RSA keys in parallel.

    Names whose key cannot be made (unsupported type or size) are left out: ``new_key_like``
    on that key raises the error, where the caller reports it against its own certificate.
    """
    rsa_names = [n for n, k in public_keys.items() if isinstance(k, rsa.RSAPublicKey)]
    made: dict[str, pki.PrivateKey | None] = {}
    workers = min(len(rsa_names), usable_cores())
    if workers > 1:
        # imported here: a pass with nothing to renew, or only EC keys, never pays for it
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keygen") as pool:
            keys = pool.map(_key_or_none, [public_keys[n] for n in rsa_names])
            made.update(zip(rsa_names, keys, strict=True))
    for name, public_key in public_keys.items():
        if name not in made:
            made[name] = _key_or_none(public_key)
    return {name: key for name, key in made.items() if key is not None}


def _key_or_none(public_key: pki.PublicKey) -> pki.PrivateKey | None:
    # One bad key (unsupported type, an RSA size cryptography refuses) must fail only its own
    # renewal, not the batch: the caller's new_key_like raises it against that certificate.
    try:
        return new_key_like(public_key)
    except ValueError:  # PKIError is a ValueError
        return None


def new_serial() -> int:
    """A random positive serial number of at most 20 octets (RFC 5280 §4.1.2.2)."""
    return x509.random_serial_number()
