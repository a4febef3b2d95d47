"""A SPIFFE Workload API server for tests, speaking the real protocol over a unix socket.

It serves `SpiffeWorkloadAPI/FetchX509SVID` and `FetchJWTBundles` with py-spiffe's
generated protos the way a SPIRE agent does: requests without the `workload.spiffe.io:
true` header are refused with INVALID_ARGUMENT, a workload with no identity gets
PERMISSION_DENIED (which clients retry), and every change is streamed as a full new
response. Tests drive it:

- `publish(svid=..., bundle=..., federated=...)` streams a new state to every client;
- `publish_jwt({trust_domain: {kid: public key}})` streams new JWT bundles, as standard
  JWK Sets without the SPIFFE `use` member (what SPIRE sends); a JWT stream opened
  before the first one waits for it;
- `fail_streams(code)` aborts the open streams (X.509 and JWT) once (INVALID_ARGUMENT
  makes py-spiffe give up for good, which is what the supervisors must survive);
- `clear()` goes back to "no identity issued".
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from spiffe._proto import workload_pb2, workload_pb2_grpc

from authz_server.tools import devcerts


@dataclass(frozen=True)
class Svid:
    """An X509-SVID as the agent hands it out: chain (leaf first) and key."""

    spiffe_id: str
    chain: tuple[x509.Certificate, ...]
    key: Any

    @classmethod
    def mint(cls, authority: devcerts.Authority, spiffe_id: str, **options: Any) -> Svid:
        certificate, key = devcerts.mint_svid(authority, spiffe_id, **options)
        return cls(spiffe_id, (certificate,), key)


def _der(certificates: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in certificates)


def _b64u(number: int, size: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(size, "big")).rstrip(b"=").decode()


def jwk(kid: str, key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> dict[str, str]:
    """A public key as a standard JWK (no `use`: how SPIRE writes JWT bundles)."""
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {
            "kty": "RSA",
            "kid": kid,
            "n": _b64u(numbers.n, (numbers.n.bit_length() + 7) // 8),
            "e": _b64u(numbers.e, (numbers.e.bit_length() + 7) // 8),
        }
    size = (key.curve.key_size + 7) // 8
    point = key.public_numbers()
    crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]
    return {
        "kty": "EC",
        "kid": kid,
        "crv": crv,
        "x": _b64u(point.x, size),
        "y": _b64u(point.y, size),
    }


def jwks(keys: Mapping[str, Any]) -> bytes:
    """A JWK Set of `keys` (kid → public key)."""
    return json.dumps({"keys": [jwk(kid, key) for kid, key in keys.items()]}).encode()


class _Servicer(workload_pb2_grpc.SpiffeWorkloadAPIServicer):  # type: ignore[misc]
    def __init__(self, owner: WorkloadApiServer) -> None:
        self._owner = owner

    def FetchX509SVID(self, request: Any, context: Any) -> Iterator[Any]:
        owner = self._owner
        if ("workload.spiffe.io", "true") not in tuple(context.invocation_metadata()):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "security header missing")
        with owner.cond:
            owner.streams += 1
            failures_seen = owner.failures
        sent = -1
        while context.is_active():
            with owner.cond:
                owner.cond.wait_for(partial(owner.changed, sent, failures_seen), timeout=0.1)
                if owner.stopping:
                    return
                if owner.failures != failures_seen:
                    context.abort(owner.failure_code, "injected failure")
                if owner.version == sent:
                    continue
                sent, response = owner.version, owner.response
            if response is None:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
            yield response

    def FetchJWTBundles(self, request: Any, context: Any) -> Iterator[Any]:
        owner = self._owner
        if ("workload.spiffe.io", "true") not in tuple(context.invocation_metadata()):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "security header missing")
        with owner.cond:
            owner.jwt_streams += 1
            failures_seen = owner.failures
        sent = 0
        while context.is_active():
            with owner.cond:
                owner.cond.wait_for(partial(owner.jwt_changed, sent, failures_seen), timeout=0.1)
                if owner.stopping:
                    return
                if owner.failures != failures_seen:
                    context.abort(owner.failure_code, "injected failure")
                if owner.jwt_version == sent:
                    continue
                sent, response = owner.jwt_version, owner.jwt_response
            yield response


class WorkloadApiServer:
    """Start with `start()`; `socket` is the `unix:` address for clients."""

    def __init__(self) -> None:
        # Unix socket paths are limited to ~107 bytes: keep the directory short.
        self._dir = Path(tempfile.mkdtemp(prefix="wapi-", dir="/tmp"))
        self.path = self._dir / "agent.sock"
        self.socket = f"unix://{self.path}"
        self.cond = threading.Condition()
        self.version = 0
        self.response: Any = None
        self.failures = 0
        self.failure_code = grpc.StatusCode.INVALID_ARGUMENT
        self.streams = 0
        self.jwt_version = 0
        self.jwt_response: Any = None
        self.jwt_streams = 0
        self.stopping = False
        self._server: grpc.Server | None = None

    def jwt_changed(self, version: int, failures: int) -> bool:
        return self.jwt_version != version or self.failures != failures or self.stopping

    def changed(self, version: int, failures: int) -> bool:
        return self.version != version or self.failures != failures or self.stopping

    def start(self) -> WorkloadApiServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        workload_pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server(_Servicer(self), server)
        server.add_insecure_port(f"unix:{self.path}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self._server is not None:
            self._server.stop(0.5).wait(2)
        shutil.rmtree(self._dir, ignore_errors=True)

    def publish(
        self,
        svid: Svid,
        bundle: Sequence[x509.Certificate],
        federated: Mapping[str, Sequence[x509.Certificate]] | None = None,
    ) -> None:
        """Stream a new full state: the SVID, its domain's bundle, the federated bundles."""
        key = svid.key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        response = workload_pb2.X509SVIDResponse(
            svids=[
                workload_pb2.X509SVID(
                    spiffe_id=svid.spiffe_id,
                    x509_svid=_der(svid.chain),
                    x509_svid_key=key,
                    bundle=_der(bundle),
                )
            ],
            federated_bundles={
                f"spiffe://{td}": _der(certs) for td, certs in (federated or {}).items()
            },
        )
        with self.cond:
            self.response = response
            self.version += 1
            self.cond.notify_all()

    def publish_jwt(self, bundles: Mapping[str, Mapping[str, Any] | bytes]) -> None:
        """Stream new JWT bundles: by trust domain, kid → public key (or raw JWK Set bytes)."""
        response = workload_pb2.JWTBundlesResponse(
            bundles={
                f"spiffe://{td}": keys if isinstance(keys, bytes) else jwks(keys)
                for td, keys in bundles.items()
            }
        )
        with self.cond:
            self.jwt_response = response
            self.jwt_version += 1
            self.cond.notify_all()

    def clear(self) -> None:
        """No identity for the workload any more (new streams get PERMISSION_DENIED)."""
        with self.cond:
            self.response = None
            self.version += 1
            self.cond.notify_all()

    def fail_streams(self, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> None:
        """Abort every open stream once with `code`."""
        with self.cond:
            self.failure_code = code
            self.failures += 1
            self.cond.notify_all()
