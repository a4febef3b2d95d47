"""The OpenID AuthZEN Authorization API 1.0 (evaluation, evaluations, PDP metadata), decided
by the same `Pipeline` as Envoy's Check, over mutual TLS. See docs/api/authzen.md.

    model.py      request bodies → frozen values (strict JSON, the standard's shapes)
    mapping.py    an evaluation → the RequestView a Check would have produced
    caller.py     who is calling: the verified SPIFFE ID of the client certificate
    decide.py     pipeline, metrics, audit (`api: authzen`) for each evaluation
    render.py     Decision → the AuthZEN Decision object
    handlers.py   the endpoints, free of HTTP: statuses, batch, errors
    wellknown.py  /.well-known/authzen-configuration
    app.py        aiohttp routes, limits, X-Request-ID
    tls.py        server TLS following the credentials as they rotate
    server.py     start_authzen: bind and serve beside the gRPC server
"""

from authz_server.authzen.app import Limits
from authz_server.authzen.decide import AuthzenService
from authz_server.authzen.server import AuthzenServer, start_authzen

__all__ = ["AuthzenServer", "AuthzenService", "Limits", "start_authzen"]
