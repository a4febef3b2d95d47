"""The project's exception tree.

    AuthzError                    base; never crosses the gRPC boundary
    ├── DenyError                 a request is refused; carries a `Reason`
    │   ├── RequestError          the CheckRequest cannot be judged (malformed, unsupported, path)
    │   └── IdentityError         the caller's identity failed verification
    ├── PolicyError               a policy could not be loaded; carries every `PolicyIssue`
    ├── ConfigError               bad command-line / environment settings
    └── StoreUnavailable          the state store failed; callers fail closed (internal_error)

Messages quote the offending input (truncated), never a secret.
"""

from __future__ import annotations

from dataclasses import dataclass

from authz_server.core.decision import Reason


class AuthzError(Exception):
    """Base of every error this package raises on purpose."""


class DenyError(AuthzError):
    """A request must be denied with `reason`."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RequestError(DenyError):
    """The request itself cannot be judged."""


class IdentityError(DenyError):
    """Identity verification failed; `reason` is one of the identity reasons of
    docs/concepts/identity.md#verification."""


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    """One located problem in a policy file."""

    file: str
    line: int | None
    rule_id: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [where]
        if self.rule_id:
            parts.append(f"rule {self.rule_id!r}")
        if self.field:
            parts.append(self.field)
        return f"{': '.join(parts)}: {self.message}"


class PolicyError(AuthzError):
    """A policy was rejected as a whole; `issues` lists every problem found."""

    def __init__(self, issues: list[PolicyIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class ConfigError(AuthzError):
    """Settings (flags, environment) are invalid."""


class StoreUnavailable(AuthzError):
    """The state store (approvals, rates, revocations) failed; fail closed with internal_error."""


def quote(value: str, limit: int = 120) -> str:
    """repr() of untrusted input, truncated so that logs stay bounded."""
    if len(value) > limit:
        return repr(value[:limit]) + f"…(+{len(value) - limit} chars)"
    return repr(value)
