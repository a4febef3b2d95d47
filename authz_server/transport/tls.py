"""TLS for the Check listener (Envoy → server) and who may call it (docs/operations/tls.md).

Certificates rotate without a restart: the listener uses grpcio's dynamic SSL
credentials, whose fetcher gRPC calls on every new handshake; `TlsCredentials.update`
swaps in a new configuration (a Workload API update, an edited `--tls-cert` file) and the
next handshake gets it. Connections already open keep the certificate they were made
with, as TLS does.

The handshake verifies a client certificate against one pooled list of CAs (gRPC offers
nothing else). A pooled list would let a partner's CA mint our IDs, so `CallerGuard`
re-verifies every call's peer chain against the bundle of **its own** trust domain
(`identity.x509`, cached per chain and bundle generation) and then requires its SPIFFE ID
to match an `--allowed-caller` pattern; anything else is aborted with PERMISSION_DENIED
before the handler runs: a caller that is not allowed never gets a decision. The health
service stays open to any caller that passed the handshake (probes need it).

Until a certificate exists (a Workload API that has not answered yet) the listener serves
a throwaway self-signed placeholder whose CA is also the only client CA: no handshake can
succeed, which is a deny.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authz_server.core.errors import ConfigError, IdentityError, quote
from authz_server.identity.bundles import TrustBundles
from authz_server.identity.patterns import PrincipalPattern
from authz_server.identity.spiffe_id import parse_workload_id
from authz_server.identity.x509 import CertificateVerifier
from authz_server.telemetry.metrics import Metrics

__all__ = [
    "CallerGuard",
    "ServerCertificate",
    "TlsCredentials",
    "load_certificate_files",
    "load_client_ca",
    "placeholder_certificate",
]

log = logging.getLogger(__name__)

OPEN_SERVICES = frozenset({"grpc.health.v1.Health"})
_MAX_PEM = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    """A private key and its certificate chain (leaf first), as PEM."""

    key_pem: bytes
    chain_pem: bytes
    not_after: datetime
    #: The leaf's URI SAN, for logs; None for the placeholder.
    spiffe_id: str | None = None


def server_certificate(
    key: Any, chain: Sequence[x509.Certificate], spiffe_id: str | None = None
) -> ServerCertificate:
    """Serialize a key and chain (leaf first) into a `ServerCertificate`."""
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    return ServerCertificate(key_pem, chain_pem, chain[0].not_valid_after_utc, spiffe_id)


def load_certificate_files(cert_path: str, key_path: str) -> ServerCertificate:
    """`--tls-cert` (chain, leaf first) and `--tls-key`; the key must be the leaf's."""
    chain_pem = _read(cert_path, "--tls-cert")
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise ConfigError(
            f"--tls-cert {quote(cert_path)}: no readable certificate: {exc}"
        ) from None
    key_pem = _read(key_path, "--tls-key")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--tls-key {quote(key_path)}: unreadable private key: {exc}") from None
    if _spki(key.public_key()) != _spki(chain[0].public_key()):
        raise ConfigError(
            f"--tls-key {quote(key_path)} is not the key of the first certificate in "
            f"--tls-cert {quote(cert_path)}"
        )
    return server_certificate(key, chain, _uri_san(chain[0]))


def load_client_ca(path: str) -> bytes:
    """`--tls-client-ca`: PEM CA certificates for the handshake."""
    data = _read(path, "--tls-client-ca")
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigError(
            f"--tls-client-ca {quote(path)}: no readable certificate: {exc}"
        ) from None
    return data


def placeholder_certificate() -> ServerCertificate:
    """A self-signed certificate nobody trusts, served until a real one exists."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "authz-server: no SVID yet")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return server_certificate(key, [certificate])


class TlsCredentials:
    """The certificate and client CAs the next handshake gets; swapped whole."""

    def __init__(self, certificate: ServerCertificate, roots_pem: bytes = b"") -> None:
        self._placeholder = placeholder_certificate()
        self.certificate = certificate
        self.roots_pem = roots_pem
        self._config = self._build()
        self._served: object | None = None
        self._lock = threading.Lock()

    def update(
        self, certificate: ServerCertificate | None = None, roots_pem: bytes | None = None
    ) -> None:
        """Serve `certificate` and/or accept clients of `roots_pem` from the next handshake."""
        if certificate is not None:
            self.certificate = certificate
        if roots_pem is not None:
            self.roots_pem = roots_pem
        self._config = self._build()

    def _build(self) -> grpc.ServerCertificateConfiguration:
        # No client CA at all would make gRPC accept no client or fail: trust only the
        # placeholder, which signs nothing, so every handshake is refused.
        roots = self.roots_pem or self._placeholder.chain_pem
        pair = (self.certificate.key_pem, self.certificate.chain_pem)
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=roots)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC core threads on every handshake: None means "unchanged".
        with self._lock:
            config = self._config
            if config is self._served:
                return None
            self._served = config
            return config

    def server_credentials(self) -> grpc.ServerCredentials:
        fetch: Any = self._fetch  # the stubs omit that the fetcher may return None
        return grpc.dynamic_ssl_server_credentials(
            self._config, fetch, require_client_authentication=True
        )


Context = Any  # grpc.aio.ServicerContext; its stubs disagree with the handler stubs
Handler = Any  # grpc.RpcMethodHandler
Enforce = Callable[[Context], Awaitable[None]]


class CallerGuard(grpc.aio.ServerInterceptor):
    """Aborts calls whose peer is not a verified, allowed SPIFFE ID (PERMISSION_DENIED)."""

    def __init__(
        self,
        allowed: Sequence[PrincipalPattern],
        bundles: Callable[[], TrustBundles],
        metrics: Metrics | None = None,
        verifier: CertificateVerifier | None = None,
    ) -> None:
        self._allowed = tuple(allowed)
        self._bundles = bundles
        self._metrics = metrics
        self._verifier = verifier or CertificateVerifier()
        self._chains: OrderedDict[bytes, tuple[x509.Certificate, ...]] = OrderedDict()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(details)
        service = details.method.lstrip("/").split("/", 1)[0]
        if handler is None or service in OPEN_SERVICES:
            return handler
        return _guarded(handler, self._enforce)

    async def _enforce(self, context: Context) -> None:
        refusal = self.refusal(context.auth_context())
        if refusal is None:
            return
        reason, message = refusal
        if self._metrics is not None:
            self._metrics.caller_rejections.labels(reason).inc()
        log.warning("Check listener: refused %s: %s", context.peer(), message)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"caller refused: {message}")

    def refusal(self, auth: Mapping[str, Iterable[bytes]]) -> tuple[str, str] | None:
        """(reason, message) when the peer may not call, None when it may.

        The claimed ID must name a workload (a bare trust domain is `invalid_spiffe_id`,
        whatever `--allowed-caller` says), and the leaf is then held to the X509-SVID rules.
        """
        leaf = _first(auth, "x509_pem_cert")
        if leaf is None:
            return "no_certificate", "a client certificate (X509-SVID) is required"
        claimed = _first(auth, "peer_spiffe_id")
        if claimed is None:
            return "certificate_invalid", "the client certificate has no single SPIFFE URI SAN"
        try:
            spiffe_id = parse_workload_id(claimed.decode("utf-8", "replace"))
        except IdentityError as exc:
            return exc.reason.value, str(exc)
        if not any(p.match(spiffe_id) is not None for p in self._allowed):
            return "not_allowed", f"{spiffe_id} matches no --allowed-caller pattern"
        intermediates = self._intermediates(_first(auth, "x509_pem_cert_chain"), leaf)
        try:
            self._verifier.verify(
                leaf.decode("ascii", "replace"),
                spiffe_id,
                self._bundles(),
                datetime.now(UTC),
                intermediates,
            )
        except IdentityError as exc:
            return exc.reason.value, str(exc)
        return None

    def _intermediates(self, chain: bytes | None, leaf: bytes) -> tuple[x509.Certificate, ...]:
        if not chain:
            return ()
        cached = self._chains.get(chain)
        if cached is None:
            try:
                leaf_der = x509.load_pem_x509_certificate(leaf).public_bytes(
                    serialization.Encoding.DER
                )
                certificates = x509.load_pem_x509_certificates(chain)
            except ValueError:
                return ()  # verification without them fails closed
            cached = tuple(
                c for c in certificates if c.public_bytes(serialization.Encoding.DER) != leaf_der
            )
            self._chains[chain] = cached
            if len(self._chains) > 256:
                self._chains.popitem(last=False)
        return cached


def _guarded(handler: Handler, enforce: Enforce) -> Handler:
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: Context) -> Any:
            await enforce(context)
            result = unary(request, context)
            return await result if isinstance(result, Awaitable) else result

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
    if handler.stream_unary is not None:
        stream_in = handler.stream_unary

        async def stream_unary(requests: Any, context: Context) -> Any:
            await enforce(context)
            result = stream_in(requests, context)
            return await result if isinstance(result, Awaitable) else result

        return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)
    streaming = handler.unary_stream or handler.stream_stream

    async def stream_out(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        await enforce(context)
        result = streaming(request, context)
        if hasattr(result, "__aiter__"):
            async for item in result:
                yield item
        elif isinstance(result, Awaitable):
            await result  # a handler that writes with context.write

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream_out, **kwargs)
    return grpc.stream_stream_rpc_method_handler(stream_out, **kwargs)


def _first(auth: Mapping[str, Iterable[bytes]], key: str) -> bytes | None:
    for value in auth.get(key, ()):
        return value
    return None


def _read(path: str, flag: str) -> bytes:
    try:
        with Path(path).open("rb") as f:
            data = f.read(_MAX_PEM + 1)
    except OSError as exc:
        raise ConfigError(f"{flag} {quote(path)}: cannot read: {exc.strerror or exc}") from None
    if len(data) > _MAX_PEM:
        raise ConfigError(f"{flag} {quote(path)}: larger than {_MAX_PEM} bytes")
    return data


def _spki(public_key: Any) -> bytes:
    data: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def _uri_san(certificate: x509.Certificate) -> str | None:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if len(uris) == 1 else None
