"""Trust bundles: one trust store per trust domain, never a pooled one.

A pooled store would let any trusted CA vouch for any ID, so a partner's CA could mint
`spiffe://our.domain/...`. Here each trust domain has its own `Store`, and a certificate
is verified only against the store of the trust domain in its own URI SAN.

A `TrustBundles` value is immutable: a reload builds a new one, with a new `generation`,
and swaps it in whole. A trust domain absent from the set is not trusted; a trust domain
present with an empty key list is explicitly distrusted.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cryptography import x509
from cryptography.x509.verification import Store

from authz_server.errors import ConfigError, quote

__all__ = ["TrustBundles", "load_pem_bundles", "parse_bundle_spec"]

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_MAX_TRUST_DOMAIN_BYTES = 255
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"

# Process-wide, monotonic: each constructed bundle set gets a fresh generation, so that
# caches keyed on it never confuse an old set with a new one.
_generations = itertools.count(1)


def _next_generation() -> int:
    return next(_generations)


@dataclass(frozen=True, slots=True, eq=False)
class TrustBundles:
    """Trusted CA certificates by trust domain, with a `Store` built once per domain.

    `generation` is assigned at construction, never passed in: two sets are the same set
    only if they are the same object (hence `eq=False`).
    """

    authorities: Mapping[str, tuple[x509.Certificate, ...]]
    generation: int = field(init=False)
    _stores: Mapping[str, Store] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        authorities = MappingProxyType({td: tuple(certs) for td, certs in self.authorities.items()})
        stores = {td: Store(list(certs)) for td, certs in authorities.items() if certs}
        object.__setattr__(self, "authorities", authorities)
        object.__setattr__(self, "generation", _next_generation())
        object.__setattr__(self, "_stores", MappingProxyType(stores))

    @classmethod
    def empty(cls) -> TrustBundles:
        """A set that trusts nothing (before the first bundles arrive)."""
        return cls({})

    def store_for(self, trust_domain: str) -> Store | None:
        """The trust store of `trust_domain`, or None when it is absent or distrusted."""
        return self._stores.get(trust_domain)

    @property
    def domains(self) -> frozenset[str]:
        """Trust domains listed in the set, including distrusted (empty) ones."""
        return frozenset(self.authorities)

    def __contains__(self, trust_domain: object) -> bool:
        return trust_domain in self.authorities


def check_trust_domain(trust_domain: str, context: str) -> None:
    """Raise `ConfigError` unless `trust_domain` is a valid trust domain name."""
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise ConfigError(
            f"{context}: invalid trust domain {quote(trust_domain)}: "
            "must be non-empty and contain only [a-z0-9._-]"
        )
    if len(trust_domain.encode()) > _MAX_TRUST_DOMAIN_BYTES:
        raise ConfigError(
            f"{context}: trust domain {quote(trust_domain)} is longer than "
            f"{_MAX_TRUST_DOMAIN_BYTES} bytes"
        )


def parse_bundle_spec(text: str) -> tuple[str, str]:
    """Split the `--trust-bundle TRUST_DOMAIN=PEM_FILE` flag into its two parts."""
    trust_domain, sep, path = text.partition("=")
    if not sep or not path:
        raise ConfigError(f"--trust-bundle {quote(text)}: expected TRUST_DOMAIN=PEM_FILE")
    check_trust_domain(trust_domain, f"--trust-bundle {quote(text)}")
    return trust_domain, path


def load_pem_bundles(specs: Mapping[str, str | Path]) -> TrustBundles:
    """Load one PEM file of CA certificates per trust domain into a new `TrustBundles`."""
    authorities: dict[str, tuple[x509.Certificate, ...]] = {}
    for trust_domain, path in specs.items():
        check_trust_domain(trust_domain, f"trust bundle {quote(str(path))}")
        authorities[trust_domain] = load_pem_authorities(Path(path))
    return TrustBundles(authorities)


def load_pem_authorities(path: Path) -> tuple[x509.Certificate, ...]:
    """Read CA certificates from a PEM file; every certificate must be a CA."""
    where = f"trust bundle {quote(str(path))}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if _PEM_BEGIN not in data:
        raise ConfigError(f"{where}: no PEM certificate in the file")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigError(f"{where}: unparsable PEM certificate: {exc}") from None
    for index, certificate in enumerate(certificates, start=1):
        problem = _not_a_ca(certificate)
        if problem:
            raise ConfigError(
                f"{where}: certificate #{index} ({certificate.subject.rfc4514_string()}) "
                f"is not a CA: {problem}"
            )
    return tuple(certificates)


def _not_a_ca(certificate: x509.Certificate) -> str | None:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return "no basicConstraints extension"
    except ValueError as exc:  # duplicate or malformed extensions
        return f"unreadable extensions: {exc}"
    if not constraints.value.ca:
        return "basicConstraints cA is false"
    return None
