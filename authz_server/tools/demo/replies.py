"""How the demo judges and shows an answer it got: the expected allow or deny, and one
line (or a few) saying what came back and from whom (Envoy itself, or authz-server)."""

from __future__ import annotations

from collections.abc import Callable

from authz_server.tools import stack

__all__ = ["allowed", "denied", "describe"]


def allowed(rule: str, principal: str) -> Callable[[stack.Reply | None], str | None]:
    """Expect a 200 whose upstream headers name the verified `principal` and `rule`."""

    def check(reply: stack.Reply | None) -> str | None:
        if reply is None or reply.status != 200:
            return "expected 200"
        seen = reply.json()["headers"]
        if seen.get("x-authz-principal") != principal or seen.get("x-authz-rule") != rule:
            return f"expected x-authz-principal={principal} and x-authz-rule={rule} upstream"
        return None

    return check


def denied(status: int, *reasons: str) -> Callable[[stack.Reply | None], str | None]:
    """Expect `status` from authz-server with one of `reasons`; none: from Envoy itself."""

    def check(reply: stack.Reply | None) -> str | None:
        if reply is None:
            return f"expected {status}, the connection was refused"
        if reply.status != status:
            return f"expected {status}"
        if not reasons:  # Envoy's own refusal (no JSON body) is what is expected
            return None
        if "x-authz-decision-id" not in reply.headers:
            return "expected the answer to come from authz-server"
        if reply.json().get("reason") not in reasons:
            return f"expected reason {' or '.join(reasons)}"
        return None

    return check


def describe(reply: stack.Reply) -> None:
    """Print what came back: what the backend saw, or who refused and why."""
    if reply.status == 200 and reply.headers.get("content-type") == "application/json":
        seen = reply.json()["headers"]
        print(f"   → 200; the backend saw {reply.json()['path']} with:")
        for name in ("x-authz-principal", "x-authz-rule", "x-authz-decision-id"):
            print(f"       {name}: {seen.get(name)}")
    elif "x-authz-decision-id" in reply.headers:
        print(f"   → {reply.status} from authz-server: {reply.body.decode(errors='replace')}")
    else:
        print(f"   → {reply.status} from Envoy itself (authz-server never asked)")
