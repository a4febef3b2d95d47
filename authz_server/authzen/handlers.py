"""The AuthZEN endpoints, free of any HTTP library: bytes and headers in, a `Reply` out.

    POST /access/v1/evaluation    one evaluation → a Decision object
    POST /access/v1/evaluations   defaults + evaluations[] + options → {"evaluations": [...]}
                                  (no `evaluations`: answered like /evaluation)

For the two POST endpoints, in this order, each ending the request with its status:

    ready         a policy and bundles are in force, the audit sink works   503
    authenticate  the caller's client certificate (caller.py)                401
    content-type  application/json (a UTF-8 charset at most)                 415
    parse         strict JSON, the standard's shapes (model.py)              400
    decide        every evaluation through the pipeline (decide.py)          200

A deny is a 200 with `"decision": false`, as the standard says: an HTTP error is never a
decision, and a decision is never an HTTP error. Error bodies are JSON objects
`{"error": {"status": N, "message": "..."}}`, the shape a failed item of a batch has in
its context. `app.py` adds what only HTTP has: routes, size and time limits, X-Request-ID.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from authz_server.authzen.caller import (
    LOCAL_CALLER,
    Caller,
    CallerAuthenticator,
    PeerCertificate,
    Unauthenticated,
)
from authz_server.authzen.decide import AuthzenService
from authz_server.authzen.model import (
    EvaluationsRequest,
    RequestInvalid,
    parse_evaluation,
    parse_evaluations,
    read_object,
)
from authz_server.check.snapshot import Snapshot
from authz_server.core.clock import Clock, SystemClock
from authz_server.policy.conditions.jsonbody import content_type_problem

__all__ = ["AuthzenHandler", "Reply", "error_reply"]


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def error_reply(status: int, message: str, **headers: str) -> Reply:
    return Reply(status, {"error": {"status": status, "message": message}}, dict(headers))


class AuthzenHandler:
    """Answers the evaluation endpoints; `authenticator` None means every caller is the
    insecure local PEP (a plaintext loopback listener, demos only)."""

    def __init__(
        self,
        service: AuthzenService,
        authenticator: CallerAuthenticator | None,
        clock: Clock | None = None,
    ) -> None:
        self.service = service
        self._authenticator = authenticator
        self._now: Callable[[], datetime] = (clock or SystemClock()).now

    async def evaluation(
        self, body: bytes, content_type: str | None, peer: PeerCertificate | None, request_id: str
    ) -> Reply:
        return await self._handle(body, content_type, peer, request_id, batch=False)

    async def evaluations(
        self, body: bytes, content_type: str | None, peer: PeerCertificate | None, request_id: str
    ) -> Reply:
        return await self._handle(body, content_type, peer, request_id, batch=True)

    async def _handle(
        self,
        body: bytes,
        content_type: str | None,
        peer: PeerCertificate | None,
        request_id: str,
        *,
        batch: bool,
    ) -> Reply:
        snapshot = self.service.snapshot()
        if snapshot is None:
            why = self.service.not_ready() or "not ready"
            return error_reply(503, f"no decisions can be made now: {why}", **{"Retry-After": "1"})
        try:
            caller = self._caller(peer, snapshot)
        except Unauthenticated as error:
            return error_reply(401, str(error))
        problem = content_type_problem(content_type)
        if problem is not None:
            return error_reply(415, f"{problem}: AuthZEN requests are application/json")
        try:
            document = read_object(body)
            if batch:
                request = parse_evaluations(document)
            else:
                request = EvaluationsRequest((parse_evaluation(document),), single=True)
        except RequestInvalid as error:
            return error_reply(400, str(error))
        results = await self.service.decide_all(
            request.items, request.semantic, caller, snapshot, request_id
        )
        if request.single:
            return Reply(200, results[0].payload)
        return Reply(200, {"evaluations": [r.payload for r in results]})

    def _caller(self, peer: PeerCertificate | None, snapshot: Snapshot) -> Caller:
        if self._authenticator is None:
            return LOCAL_CALLER
        return self._authenticator.authenticate(peer, snapshot, self._now())
