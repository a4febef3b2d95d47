"""Trust bundles: one trust store per trust domain, never a pooled one.

A pooled store would let any trusted CA vouch for any ID, so a partner's CA could mint
`spiffe://our.domain/...`. Here each trust domain has its own `Store`, and a certificate
is verified only against the store of the trust domain in its own URI SAN.

A `TrustBundles` value is immutable: a reload builds a new one, with a new `generation`,
and swaps it in whole. A trust domain absent from the set is not trusted; a trust domain
present with an empty key list is explicitly distrusted.

A CA that cannot sign (no keyUsage, or no keyCertSign) is kept but warned about at load
(see `authorities`), and `TrustBundles.authority_warnings` lists it for `/readyz`.

A bundle file (`--trust-bundle TRUST_DOMAIN=FILE`) is PEM (CA certificates) or SPIFFE
bundle JSON (see `bundle_json`), told apart by content, not by name: a ConfigMap key need
not end in `.json`. JSON bundles may also carry JWT-SVID keys (`jwt_authorities`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import Store

from authz_server.core.errors import ConfigError, quote
from authz_server.identity.authorities import authority_warnings, log_authority_warnings
from authz_server.identity.bundle_json import JwtAuthority, not_a_ca, parse_bundle_json

__all__ = [
    "DomainBundle",
    "TrustBundles",
    "load_bundle_file",
    "load_bundles",
    "load_pem_bundles",
    "parse_bundle_spec",
]

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_MAX_TRUST_DOMAIN_BYTES = 255
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
#: A bundle is a handful of CA certificates; anything this large is a mistake.
_MAX_BUNDLE_BYTES = 1024 * 1024

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
    #: JWT-SVID keys by trust domain, then by `kid` (from SPIFFE bundle JSON).
    jwt_authorities: Mapping[str, Mapping[str, JwtAuthority]] = field(default_factory=dict)
    generation: int = field(init=False)
    #: Per trust domain, a line for each CA that cannot sign certificates (kept, warned).
    authority_warnings: Mapping[str, tuple[str, ...]] = field(init=False)
    #: Trust domains with X.509 authorities of which none can sign: every caller fails.
    unusable_domains: frozenset[str] = field(init=False)
    _stores: Mapping[str, Store] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        authorities = MappingProxyType({td: tuple(certs) for td, certs in self.authorities.items()})
        stores = {td: Store(list(certs)) for td, certs in authorities.items() if certs}
        jwt = MappingProxyType(
            {td: MappingProxyType(dict(keys)) for td, keys in self.jwt_authorities.items()}
        )
        warnings = {td: authority_warnings(certs) for td, certs in authorities.items()}
        unusable = frozenset(
            td for td, certs in authorities.items() if certs and len(warnings[td]) == len(certs)
        )
        object.__setattr__(self, "authorities", authorities)
        object.__setattr__(self, "jwt_authorities", jwt)
        object.__setattr__(self, "generation", _next_generation())
        object.__setattr__(
            self, "authority_warnings", MappingProxyType({td: w for td, w in warnings.items() if w})
        )
        object.__setattr__(self, "unusable_domains", unusable)
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

    @property
    def usable_domains(self) -> frozenset[str]:
        """Trust domains with at least one X.509 authority."""
        return frozenset(self._stores)

    def roots_pem(self) -> bytes:
        """Every X.509 authority as one PEM blob (for a TLS handshake's client CA list only:
        callers are then verified against their own trust domain's bundle)."""
        seen: set[bytes] = set()
        parts: list[bytes] = []
        for certificates in self.authorities.values():
            for certificate in certificates:
                data = certificate.public_bytes(Encoding.PEM)
                if data not in seen:
                    seen.add(data)
                    parts.append(data)
        return b"".join(parts)


@dataclass(frozen=True, slots=True)
class DomainBundle:
    """What one bundle file says about its trust domain."""

    x509_authorities: tuple[x509.Certificate, ...]
    jwt_authorities: Mapping[str, JwtAuthority] = field(default_factory=dict)
    #: JWKs skipped (unknown use or key type), for the log.
    ignored: tuple[str, ...] = ()


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
    for trust_domain, path in specs.items():
        where = f"trust bundle {quote(str(path))}"
        log_authority_warnings(where, trust_domain, authorities[trust_domain])
    return TrustBundles(authorities)


def load_bundles(specs: Mapping[str, str | Path]) -> dict[str, DomainBundle]:
    """Read every `--trust-bundle` file (PEM or SPIFFE JSON); all or nothing. Logs a
    warning for each CA that cannot sign certificates (kept in the bundle)."""
    bundles: dict[str, DomainBundle] = {}
    for trust_domain, path in specs.items():
        check_trust_domain(trust_domain, f"trust bundle {quote(str(path))}")
        bundles[trust_domain] = load_bundle_file(Path(path))
    for trust_domain, path in specs.items():  # after all loaded: a failed load warns nothing
        where = f"trust bundle {quote(str(path))}"
        log_authority_warnings(where, trust_domain, bundles[trust_domain].x509_authorities)
    return bundles


def load_bundle_file(path: Path) -> DomainBundle:
    """One bundle file: SPIFFE bundle JSON when it starts with `{`, PEM otherwise."""
    where = f"trust bundle {quote(str(path))}"
    data = _read(path, where)
    if data.lstrip().startswith(b"{"):
        parsed = parse_bundle_json(data, where)
        return DomainBundle(parsed.x509_authorities, parsed.jwt_authorities, parsed.ignored)
    return DomainBundle(_pem_authorities(data, where))


def _read(path: Path, where: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_BUNDLE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{where}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if len(data) > _MAX_BUNDLE_BYTES:
        raise ConfigError(f"{where}: larger than {_MAX_BUNDLE_BYTES} bytes")
    return data


def load_pem_authorities(path: Path) -> tuple[x509.Certificate, ...]:
    """Read CA certificates from a PEM file; every certificate must be a CA."""
    where = f"trust bundle {quote(str(path))}"
    return _pem_authorities(_read(path, where), where)


def _pem_authorities(data: bytes, where: str) -> tuple[x509.Certificate, ...]:
    if _PEM_BEGIN not in data:
        raise ConfigError(f"{where}: no PEM certificate in the file")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigError(f"{where}: unparsable PEM certificate: {exc}") from None
    for index, certificate in enumerate(certificates, start=1):
        problem = not_a_ca(certificate)
        if problem:
            raise ConfigError(
                f"{where}: certificate #{index} ({certificate.subject.rfc4514_string()}) "
                f"is not a CA: {problem}"
            )
    return tuple(certificates)
