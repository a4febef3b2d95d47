"""A do-nothing `Authorization` server: the ceiling authz-server is measured against.

It is authz-server's own grpc.aio stack with the work taken out: the same server options
(`authz_server.runtime.wiring.GRPC_OPTIONS`), the same raw-bytes generic handler shape as
`CheckService` (an `async def` taking and returning bytes, no deserializer), health and
reflection registered the same way. `Check` never reads the request and returns one
precomputed OK `CheckResponse`, so the difference between the two servers is exactly
the cost of deciding: parsing, identity, matching, rendering and auditing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from authz_server.check.service import SERVICE_NAME
from authz_server.runtime.wiring import GRPC_OPTIONS

__all__ = ["OK_RESPONSE", "NoopService", "RunningNoop", "start_noop_server"]

#: The one answer: allowed, no headers added.
OK_RESPONSE: bytes = external_auth_pb2.CheckResponse(
    status=status_pb2.Status(code=0),
    ok_response=external_auth_pb2.OkHttpResponse(),
).SerializeToString()


class NoopService:
    """Counts Checks and allows them all, without looking."""

    def __init__(self) -> None:
        self.decisions = 0

    async def check(self, data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        self.decisions += 1
        return OK_RESPONSE

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME, {"Check": grpc.unary_unary_rpc_method_handler(self.check)}
        )


@dataclass
class RunningNoop:
    server: grpc.aio.Server
    port: int
    service: NoopService

    async def stop(self, grace: float) -> None:
        await self.server.stop(grace)


async def start_noop_server(listen: str) -> RunningNoop:
    """Bind `listen` (port 0 picks one), start, and report SERVING."""
    service = NoopService()
    server = grpc.aio.server(options=GRPC_OPTIONS)
    server.add_generic_rpc_handlers((service.handler(),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningNoop(server, port, service)
