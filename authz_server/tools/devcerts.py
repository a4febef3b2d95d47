"""A local CA and X509-SVIDs for `authz-server dev-certs`, the demo and the tests.

Certificates follow what SPIRE issues (ECDSA P-256, SHA-256, one URI SAN, keyUsage
digitalSignature + keyEncipherment + keyAgreement, EKU serverAuth + clientAuth), so a
certificate that verifies here verifies like a real SVID. `mint_svid` can also mint the
deliberately bad variants (two URI SANs, a CA leaf, wrong or non-critical keyUsage, an
EKU lacking a usage, expired), and `mint_ca` CAs that cannot sign, that the tests use to
prove each one is rejected or reported. Nothing here is for production keys.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from authz_server.core.errors import ConfigError, IdentityError, quote
from authz_server.identity.spiffe_id import parse_spiffe_id

__all__ = [
    "Authority",
    "CaKeyUsageKind",
    "CaOutcome",
    "DevCerts",
    "EkuKind",
    "KeyUsageKind",
    "key_pem",
    "load_authority",
    "mint_ca",
    "mint_svid",
    "parse_id_spec",
    "pem",
    "write_dev_certs",
]

KeyUsageKind = Literal["default", "none", "cert_sign"]
#: A leaf's extendedKeyUsage: SPIRE's serverAuth + clientAuth ("both"), one alone, neither
#: (codeSigning only), or no extension at all ("none").
EkuKind = Literal["both", "none", "client_auth", "server_auth", "code_signing"]
#: A CA's keyUsage: keyCertSign + cRLSign ("default"), absent, or digitalSignature only.
CaKeyUsageKind = Literal["default", "none", "no_cert_sign"]

_EKU: Mapping[EkuKind, tuple[x509.ObjectIdentifier, ...]] = {
    "both": (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    "none": (),
    "client_auth": (ExtendedKeyUsageOID.CLIENT_AUTH,),
    "server_auth": (ExtendedKeyUsageOID.SERVER_AUTH,),
    "code_signing": (ExtendedKeyUsageOID.CODE_SIGNING,),
}

CA_LIFETIME = timedelta(days=365)
SVID_LIFETIME = timedelta(days=30)
#: Clock skew allowance: certificates start a little in the past.
BACKDATE = timedelta(minutes=5)

_Extension = TypeVar("_Extension", bound=x509.ExtensionType)

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")


@dataclass(frozen=True)
class Authority:
    """A CA that can mint SVIDs in `trust_domain`."""

    trust_domain: str
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _window(
    not_before: datetime | None, not_after: datetime | None, lifetime: timedelta
) -> tuple[datetime, datetime]:
    start = not_before if not_before is not None else datetime.now(UTC) - BACKDATE
    end = not_after if not_after is not None else start + BACKDATE + lifetime
    return start, end


def mint_ca(
    trust_domain: str,
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    name: str | None = None,
    issuer: Authority | None = None,
    key_usage: CaKeyUsageKind = "default",
) -> Authority:
    """A CA for `trust_domain`: self-signed, or an intermediate when `issuer` is given.

    `key_usage` other than "default" mints a CA that cannot sign certificates (for the
    bundle warnings).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _window(not_before, not_after, CA_LIFETIME)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE"),
            x509.NameAttribute(NameOID.COMMON_NAME, name or f"{trust_domain} dev CA"),
        ]
    )
    signer_key: ec.EllipticCurvePrivateKey = key if issuer is None else issuer.key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
            ),
            critical=False,
        )
    )
    if key_usage != "none":
        cert_sign = key_usage == "default"
        usage = _key_usage(cert_sign=cert_sign, signature=not cert_sign)
        builder = builder.add_extension(usage, critical=True)
    if issuer is not None:
        builder = builder.add_extension(_aki(issuer), critical=False)
    certificate = builder.sign(signer_key, hashes.SHA256())
    return Authority(trust_domain, certificate, key)


def mint_svid(
    authority: Authority,
    spiffe_id: str,
    *,
    extra_uris: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Iterable[str | ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    is_ca: bool = False,
    key_usage: KeyUsageKind = "default",
    key_usage_critical: bool = True,
    eku: EkuKind = "both",
    aki: bool = True,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """An X509-SVID for `spiffe_id` signed by `authority`; the options mint bad variants.

    `spiffe_id` is not validated here, so that tests can mint certificates carrying
    malformed IDs; `write_dev_certs` validates what it writes.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _window(not_before, not_after, SVID_LIFETIME)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
    names += [x509.UniformResourceIdentifier(u) for u in extra_uris]
    names += [x509.DNSName(d) for d in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if aki:
        builder = builder.add_extension(_aki(authority), critical=False)
    if key_usage != "none":
        usage = _key_usage(cert_sign=key_usage == "cert_sign", signature=True)
        builder = builder.add_extension(usage, critical=key_usage_critical)
    if _EKU[eku]:
        builder = builder.add_extension(x509.ExtendedKeyUsage(_EKU[eku]), critical=False)
    return builder.sign(authority.key, hashes.SHA256()), key


def _key_usage(*, cert_sign: bool, signature: bool) -> x509.KeyUsage:
    # A leaf gets what SPIRE sets: digitalSignature, keyEncipherment, keyAgreement.
    return x509.KeyUsage(
        digital_signature=signature,
        content_commitment=False,
        key_encipherment=signature,
        data_encipherment=False,
        key_agreement=signature,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _aki(authority: Authority) -> x509.AuthorityKeyIdentifier:
    ski = authority.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


def pem(cert: x509.Certificate) -> bytes:
    """The certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM (dev keys only)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def parse_id_spec(text: str) -> tuple[str, str]:
    """Split the `--id NAME=SPIFFE_ID` flag; raise `ConfigError` when it is malformed."""
    name, sep, spiffe_id = text.partition("=")
    if not sep or not name or not spiffe_id:
        raise ConfigError(f"--id {quote(text)}: expected NAME=SPIFFE_ID")
    return name, spiffe_id


CaOutcome = Literal["new", "reused", "replaced"]


@dataclass(frozen=True)
class DevCerts:
    """What `write_dev_certs` wrote, and whether the CA in `ca.pem` is new."""

    #: `ca.pem`, `ca.key`, `<name>.pem`, `<name>.key` → its path.
    paths: Mapping[str, Path]
    authority: Authority
    #: new: no CA was there; reused: the one there signed the SVIDs; replaced: `force`.
    ca: CaOutcome


def write_dev_certs(
    out_dir: Path,
    trust_domain: str,
    ids: Mapping[str, str],
    dns: Mapping[str, Sequence[str]] | None = None,
    *,
    force: bool = False,
) -> DevCerts:
    """Write `<name>.pem`/`<name>.key` per id, signed by the CA in `ca.pem`/`ca.key`.

    A CA already in `out_dir` signs the new SVIDs, so that certificates it issued before
    keep verifying against `ca.pem`; it must belong to `trust_domain`. Without one, or
    with `force`, a new CA is minted and written (replacing the old: what it signed stops
    verifying). Keys are written 0600. Everything is validated and loaded before the first
    file is written, so a bad name, ID or CA leaves `out_dir` untouched.
    """
    dns = dns or {}
    _check_request(trust_domain, ids, dns)
    found = _existing_ca_files(out_dir)
    outcome: CaOutcome
    if found and not force:
        if len(found) == 1:
            missing = "ca.key" if found[0].name == "ca.pem" else "ca.pem"
            raise ConfigError(
                f"{found[0]} is there without {missing}: no CA to sign with; "
                "--force mints a new CA in its place"
            )
        authority, outcome = load_authority(out_dir, trust_domain), "reused"
    else:
        authority, outcome = mint_ca(trust_domain), "replaced" if found else "new"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {"ca.pem": out_dir / "ca.pem", "ca.key": out_dir / "ca.key"}
        if outcome != "reused":
            _write(paths["ca.pem"], pem(authority.certificate), 0o644)
            _write(paths["ca.key"], key_pem(authority.key), 0o600)
        ca_end = authority.certificate.not_valid_after_utc
        for name, spiffe_id in ids.items():
            cert, key = mint_svid(
                authority,
                spiffe_id,
                dns_names=tuple(dns.get(name, ())),
                # An SVID must not outlive a reused CA that expires sooner.
                not_after=ca_end if ca_end < datetime.now(UTC) + SVID_LIFETIME else None,
            )
            paths[f"{name}.pem"] = _write(out_dir / f"{name}.pem", pem(cert), 0o644)
            paths[f"{name}.key"] = _write(out_dir / f"{name}.key", key_pem(key), 0o600)
    except OSError as error:
        raise ConfigError(
            f"--out {quote(str(out_dir))}: cannot write there: {_write_problem(error, out_dir)}; "
            "choose a directory you can create and write"
        ) from None
    return DevCerts(paths, authority, outcome)


def _existing_ca_files(out_dir: Path) -> list[Path]:
    try:
        return [out_dir / name for name in ("ca.pem", "ca.key") if (out_dir / name).exists()]
    except OSError as error:  # e.g. a directory that cannot be searched
        raise ConfigError(
            f"--out {quote(str(out_dir))}: cannot look inside: {error.strerror or error}"
        ) from None


def _write_problem(error: OSError, out_dir: Path) -> str:
    if isinstance(error, FileExistsError) and str(error.filename) == str(out_dir):
        return "a file, not a directory, has that name"
    where = str(error.filename or out_dir)
    return f"{error.strerror or error}" + (f" ({where})" if where != str(out_dir) else "")


def load_authority(directory: Path, trust_domain: str) -> Authority:
    """The CA in `directory/ca.pem` + `ca.key`, checked fit to sign SVIDs of `trust_domain`.

    ConfigError when a file cannot be read, the key is not the certificate's, the
    certificate is not a signing CA, has expired, or belongs to another trust domain.
    """
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    redo = "--force mints a new CA (what the old one signed then stops verifying)"
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as error:
        raise ConfigError(
            f"cannot read the CA: {error.strerror or error} ({error.filename}); {redo}"
        ) from None
    except (ValueError, TypeError) as error:  # not PEM, or an encrypted key
        raise ConfigError(f"{cert_path} / {key_path}: not a usable CA: {error}; {redo}") from None
    if (
        not isinstance(key, ec.EllipticCurvePrivateKey)
        or key.public_key() != certificate.public_key()
    ):
        raise ConfigError(f"{key_path} is not the EC private key of {cert_path}; {redo}")
    problem = _ca_problem(certificate, trust_domain)
    if problem is not None:
        raise ConfigError(f"{cert_path}: {problem}; {redo}")
    return Authority(trust_domain, certificate, key)


def _ca_problem(certificate: x509.Certificate, trust_domain: str) -> str | None:
    constraints = _extension(certificate, x509.BasicConstraints)
    usage = _extension(certificate, x509.KeyUsage)
    if constraints is None or not constraints.ca or (usage is not None and not usage.key_cert_sign):
        return "not a CA that can sign certificates"
    if certificate.not_valid_after_utc <= datetime.now(UTC):
        return f"the CA expired at {certificate.not_valid_after_utc.isoformat()}"
    san = _extension(certificate, x509.SubjectAlternativeName)
    uris = san.get_values_for_type(x509.UniformResourceIdentifier) if san is not None else []
    domains = [u.removeprefix("spiffe://").split("/")[0] for u in uris if u.startswith("spiffe://")]
    if trust_domain not in domains:
        found = f"trust domain {quote(domains[0])}" if domains else "no spiffe:// trust domain"
        return f"this CA is for {found}, not {quote(trust_domain)} (or use another --out)"
    return None


def _extension(certificate: x509.Certificate, kind: type[_Extension]) -> _Extension | None:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_request(trust_domain: str, ids: Mapping[str, str], dns: Mapping[str, object]) -> None:
    if not _TRUST_DOMAIN.fullmatch(trust_domain) or len(trust_domain) > 255:
        raise ConfigError(f"trust domain {quote(trust_domain)}: may contain only [a-z0-9._-]")
    if not ids:
        raise ConfigError("dev-certs: at least one --id NAME=SPIFFE_ID is required")
    for name, spiffe_id in ids.items():
        if not _NAME.fullmatch(name) or name == "ca":
            raise ConfigError(
                f"--id name {quote(name)}: must match [a-z0-9][a-z0-9_-]* and not be 'ca'"
            )
        try:
            parsed = parse_spiffe_id(spiffe_id)
        except IdentityError as exc:
            raise ConfigError(f"--id {name}: {exc}") from None
        if parsed.trust_domain != trust_domain:
            raise ConfigError(
                f"--id {name}: {quote(spiffe_id)} is not in trust domain {quote(trust_domain)}"
            )
        if not parsed.segments:
            raise ConfigError(f"--id {name}: {quote(spiffe_id)} has no path (a workload needs one)")
    unknown = sorted(set(dns) - set(ids))
    if unknown:
        raise ConfigError(f"DNS names given for unknown ids: {', '.join(map(quote, unknown))}")


def _write(path: Path, data: bytes, mode: int) -> Path:
    # Create with the final mode so a key is never world-readable, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)  # O_CREAT's mode is masked by umask and ignored for existing files
    return path
