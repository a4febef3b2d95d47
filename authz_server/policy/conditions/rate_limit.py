"""`when.rate_limit`: at most `requests` per sliding `per`, counted in the store
(docs/policy/conditions.md#rate-limit).

    rate_limit: {requests: 10, per: 1m, key: principal}          # per caller (the default)
    rate_limit: {requests: 100, per: 1s, key: rule}              # all callers together
    rate_limit: {requests: 5, per: 1h, key: "header:x-tenant"}   # per value of a header

Counting is the store's sliding-window log (`state/store.py`): a request is admitted iff
fewer than `requests` were admitted in the window (now - per, now], so no window of length
`per` ever admits more than `requests`, also across its edges, where a fixed window lets
through twice the limit. Refused requests are not counted, so a client that keeps retrying
is admitted again as soon as the oldest admitted request leaves the window, which is what
`retry-after` (whole seconds, rounded up) tells it.

Counters belong to the rule: two rules limiting the same principal count separately, and a
policy reload that changes `requests` or `per` keeps the counts. Header values are hashed
into the key, so the key stays short whatever a client sends; a request without the key
header is refused (`condition_failed`): there is nothing to count it against, and letting
it through would make the limit optional. Callers without identity (a rule with
`unauthenticated: true`, key `principal`) share one counter.

Over the limit → FAILS `rate_limited` (429) with `retry_after`. A store failure →
UNKNOWN `internal_error`: this rule fails closed, the others keep answering.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from authz_server.core.decision import Reason
from authz_server.core.durations import parse_duration_s
from authz_server.core.errors import StoreUnavailable, quote
from authz_server.core.yaml_source import Fields, Scalar, Value
from authz_server.policy.conditions.base import HOLDS, ConditionResult, Outcome, RequestContext
from authz_server.state.store import Store

__all__ = ["RateLimitCondition", "compile_rate_limit"]

_KEYS = frozenset({"requests", "per", "key"})
#: A bound on what one key may keep (the sliding log holds one entry per admitted request).
MAX_REQUESTS = 100_000
_HEADER = "header:"
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")


@dataclass(frozen=True, slots=True)
class RateLimitCondition:
    rule_id: str
    requests: int
    per_s: int
    #: "principal", "rule", or a lower-case header name.
    key_kind: str
    header: str | None = None
    kind: str = "rate_limit"

    def key(self, ctx: RequestContext) -> str | None:
        """The counter this request counts against; None when its key header is missing."""
        if self.header is not None:
            value = ctx.headers.get(self.header)
            if value is None:
                return None
            digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
            return f"{self.rule_id}|header:{self.header}|{digest}"
        if self.key_kind == "rule":
            return f"{self.rule_id}|rule"
        principal = str(ctx.spiffe_id) if ctx.spiffe_id is not None else ""
        return f"{self.rule_id}|principal|{principal}"

    async def evaluate(
        self, ctx: RequestContext, params: Mapping[str, str], store: Store
    ) -> ConditionResult:
        key = self.key(ctx)
        if key is None:
            return ConditionResult.fails(
                Reason.CONDITION_FAILED, f"rate limit key header {quote(str(self.header))} missing"
            )
        try:
            result = await store.hit(key, self.requests, float(self.per_s))
        except StoreUnavailable as error:
            return ConditionResult.unknown(Reason.INTERNAL_ERROR, f"store: {error}")
        if result.allowed:
            return HOLDS
        return ConditionResult(
            Outcome.FAILS,
            Reason.RATE_LIMITED,
            f"over {self.requests} per {self.per_s}s ({self.key_kind})",
            retry_after=result.retry_after,
        )

    def preview(self, ctx: RequestContext, params: Mapping[str, str]) -> str:
        return f"{self.requests} per {self.per_s}s by {self.key_kind}; counters not consulted"


def compile_rate_limit(fields: Fields, value: Value, path: str) -> RateLimitCondition | None:
    """`{requests, per, key}`; every bad field is an issue."""
    node = fields.mapping(value, path, _KEYS)
    if node is None:
        return None
    before = len(fields.issues)
    entries = node.entries
    requests = 0
    if "requests" not in entries:
        fields.issue(node.line, f"{path}.requests", "required (how many requests per 'per')")
    else:
        item = entries["requests"]
        number = item.value if isinstance(item, Scalar) else None
        if type(number) is not int or not 1 <= number <= MAX_REQUESTS:
            fields.issue(
                item.line,
                f"{path}.requests",
                f"expected a whole number from 1 to {MAX_REQUESTS}, got {quote(str(number))}",
            )
        else:
            requests = number
    per_s = 0
    if "per" not in entries:
        fields.issue(node.line, f"{path}.per", "required (a duration such as 1s, 1m or 1h)")
    elif (text := fields.string(entries["per"], f"{path}.per")) is not None:
        try:
            per_s = parse_duration_s(text)
        except ValueError as error:
            fields.issue(entries["per"].line, f"{path}.per", str(error))
    key_kind, header = "principal", None
    if "key" in entries and (text := fields.string(entries["key"], f"{path}.key")) is not None:
        key_kind = text
        if text.startswith(_HEADER):
            header = text[len(_HEADER) :].strip().lower()
            if _HEADER_NAME.fullmatch(header) is None:
                fields.issue(
                    entries["key"].line,
                    f"{path}.key",
                    f"header key {quote(text)}: expected header:NAME with a valid header name",
                )
        elif text not in ("principal", "rule"):
            fields.issue(
                entries["key"].line,
                f"{path}.key",
                f"expected 'principal', 'rule' or 'header:NAME', got {quote(text)}",
            )
    if len(fields.issues) != before:
        return None
    return RateLimitCondition(fields.rule_id or "", requests, per_s, key_kind, header)
