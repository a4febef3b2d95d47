"""`admin.approvals` and `when.approval.preview_fields` in the policy loader: parsed
settings, and every mistake a located issue (file:line, field)."""

from __future__ import annotations

import pytest

from authz_server.core.errors import PolicyError
from authz_server.policy.approvals_notify import NotifyEndpoint
from authz_server.policy.conditions.approval import ApprovalCondition
from authz_server.policy.load import load_policy_text
from tests.unit.notify.support import policy

HEADER = "version: 1\nidentity: {trust_domains: [example.org]}\n"


def test_full_settings() -> None:
    loaded = load_policy_text(
        HEADER
        + """\
admin:
  approvals:
    console_url: https://console.example.org/authz/
    notify:
      - url: https://hooks.example.org/authz
        secret_file: /run/secrets/notify
      - url: https://hooks.slack.com/services/T0/B0/XXXX
        format: slack
        events: [pending]
      - url: http://[::1]:8080/x
        secret_file: /s
        name: local
"""
    )
    approvals = loaded.approvals
    assert approvals.console_url == "https://console.example.org/authz"
    assert approvals.notify == (
        NotifyEndpoint("hooks.example.org", "https://hooks.example.org/authz", "json", "/run/secrets/notify",
                       frozenset({"pending", "approved", "rejected", "expired"})),
        NotifyEndpoint("hooks.slack.com", "https://hooks.slack.com/services/T0/B0/XXXX", "slack", None,
                       frozenset({"pending"})),
        NotifyEndpoint("local", "http://[::1]:8080/x", "json", "/s",
                       frozenset({"pending", "approved", "rejected", "expired"})),
    )  # fmt: skip


def test_no_section_means_no_notifications() -> None:
    loaded = load_policy_text(HEADER)
    assert loaded.approvals.notify == () and loaded.approvals.console_url is None


def test_preview_fields_compile_to_paths() -> None:
    rule = policy().rules[0]
    (condition,) = rule.when.stateful
    assert isinstance(condition, ApprovalCondition)
    assert condition.preview_fields == (("amount",), ("destination", "country"))


def _admin(text: str) -> str:
    return HEADER + "admin:\n  approvals:\n" + text


APPROVAL_RULE = """\
rules:
  - id: r
    paths: ["/x"]
    effect: allow
    when:
      approval: {approvers: ["spiffe://example.org/h/*"], preview_fields: %s}
"""

# text → (line, field, message fragment)
ISSUES = [
    pytest.param(_admin("    console: x\n"), (5, "admin.approvals.console", "unknown key 'console' (expected one of: console_url, notify)"), id="unknown-key"),
    pytest.param(_admin("    console_url: ftp://x\n"), (5, "admin.approvals.console_url", "not an http:// or https:// URL"), id="console-not-http"),
    pytest.param(_admin("    console_url: https://c/?a=1\n"), (5, "admin.approvals.console_url", "no ?query"), id="console-query"),
    pytest.param(_admin("    notify: {url: x}\n"), (5, "admin.approvals.notify", "expected a list of endpoints"), id="notify-not-list"),
    pytest.param(_admin("    notify:\n      - secret_file: /s\n"), (6, "admin.approvals.notify[0].url", "required"), id="url-required"),
    pytest.param(_admin("    notify:\n      - {url: 'hooks.example.org', secret_file: /s}\n"), (6, "admin.approvals.notify[0].url", "not an http:// or https:// URL"), id="url-without-scheme"),
    pytest.param(_admin("    notify:\n      - {url: 'https://u:p@h/x', secret_file: /s}\n"), (6, "admin.approvals.notify[0].url", "must not carry credentials"), id="url-credentials"),
    pytest.param(_admin("    notify:\n      - {url: 'https://h:99999/x', secret_file: /s}\n"), (6, "admin.approvals.notify[0].url", "port"), id="url-bad-port"),
    pytest.param(_admin("    notify:\n      - url: https://h/x\n"), (6, "admin.approvals.notify[0].secret_file", "required for format json"), id="json-needs-secret"),
    pytest.param(_admin("    notify:\n      - {url: https://h/x, secret_file: secret.txt}\n"), (6, "admin.approvals.notify[0].secret_file", "must be an absolute path"), id="secret-relative"),
    pytest.param(_admin("    notify:\n      - {url: https://h/x, secret_file: /s, format: xml}\n"), (6, "admin.approvals.notify[0].format", "expected 'json' or 'slack'"), id="bad-format"),
    pytest.param(_admin("    notify:\n      - {url: https://h/x, secret_file: /s, events: [pending, decided]}\n"), (6, "admin.approvals.notify[0].events[1]", "unknown event 'decided'"), id="bad-event"),
    pytest.param(_admin("    notify:\n      - {url: https://h/x, secret_file: /s, events: []}\n"), (6, "admin.approvals.notify[0].events", "name at least one event"), id="no-events"),
    pytest.param(_admin("    notify:\n      - {url: https://h/x, secret_file: /s}\n      - {url: https://h/y, secret_file: /s}\n"), (7, "admin.approvals.notify[1].name", "name 'h' is already used by endpoint 0"), id="duplicate-default-name"),
    pytest.param(_admin("    notify:\n      - {url: https://h/x, secret_file: /s, name: ''}\n"), (6, "admin.approvals.notify[0].name", "1 to 64 printable characters"), id="empty-name"),
    pytest.param(_admin("    notify:\n      - {url: https://h/x, secret_file: /s, retries: 3}\n"), (6, "admin.approvals.notify[0].retries", "unknown key 'retries'"), id="unknown-endpoint-key"),
    pytest.param(HEADER + APPROVAL_RULE % "[amount, authorization]", (8, "when.approval.preview_fields[1]", "'authorization' looks like a secret"), id="preview-secret"),
    pytest.param(HEADER + APPROVAL_RULE % "[user.password_hash]", (8, "when.approval.preview_fields[0]", "looks like a secret (password)"), id="preview-nested-secret"),
    pytest.param(HEADER + APPROVAL_RULE % "['a..b']", (8, "when.approval.preview_fields[0]", "expected dotted field names"), id="preview-empty-segment"),
    pytest.param(HEADER + APPROVAL_RULE % "amount", (8, "when.approval.preview_fields", "expected a list"), id="preview-not-list"),
    pytest.param(HEADER + APPROVAL_RULE % ("[" + ", ".join(f"f{i}" for i in range(33)) + "]"), (8, "when.approval.preview_fields", "at most 32 fields"), id="preview-too-many"),
    pytest.param(_admin("    notify:\n" + "".join(f"      - {{url: https://h{i}/x, secret_file: /s}}\n" for i in range(17))), (6, "admin.approvals.notify", "at most 16 endpoints"), id="too-many-endpoints"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), ISSUES)
def test_issues(text: str, expected: tuple[int, str, str]) -> None:
    with pytest.raises(PolicyError) as raised:
        load_policy_text(text, "policy.yaml")
    line, field, fragment = expected
    found = [(i.line, i.field, i.message) for i in raised.value.issues]
    assert any(n == line and f == field and fragment in m for n, f, m in found), found
    assert all(str(i).startswith("policy.yaml:") for i in raised.value.issues)
