"""`when.schedule`: IANA zones, days, windows across midnight and daylight-saving changes."""

# One case per line keeps the parametrized tables readable and diffable.

from __future__ import annotations

from datetime import datetime

import pytest

from authz_server.core.decision import Reason
from authz_server.core.errors import PolicyError
from authz_server.policy.conditions.base import Outcome, RequestContext
from authz_server.policy.load import load_policy_text
from authz_server.policy.model import Rule

HEADER = "version: 1\nidentity:\n  trust_domains: [example.org]\nrules:\n"


def _rule(schedule: str) -> Rule:
    text = HEADER + f"  - id: r\n    effect: allow\n    when:\n      schedule: {schedule}\n"
    return load_policy_text(text).rules[0]


def _holds(rule: Rule, at: str) -> bool:
    ctx = RequestContext("GET", "h", "/", now=datetime.fromisoformat(at))
    result = rule.when.check(ctx, {})
    assert result.outcome is Outcome.HOLDS or result.reason is Reason.OUTSIDE_SCHEDULE
    return result.holds


BERLIN_OFFICE = '{timezone: Europe/Berlin, days: [mon, tue, wed, thu], hours: "09:00-16:00"}'
NIGHT = '{timezone: Europe/Berlin, days: [fri], hours: "22:00-02:00"}'
DST_EDGE = '{timezone: Europe/Berlin, hours: "02:00-03:00"}'
NEW_YORK = '{timezone: America/New_York, days: [sun], hours: "01:00-03:00"}'
TWO = '[{timezone: UTC, days: [sat]}, {timezone: Asia/Tokyo, days: [mon], hours: "08:00-09:00"}]'


@pytest.mark.parametrize(
    ("schedule", "at", "holds"),
    [
        pytest.param(BERLIN_OFFICE, "2026-11-26T10:00:00+01:00", True, id="thursday-morning"),
        pytest.param(BERLIN_OFFICE, "2026-11-26T08:59:59+01:00", False, id="before-start"),
        pytest.param(BERLIN_OFFICE, "2026-11-26T09:00:00+01:00", True, id="start-inclusive"),
        pytest.param(BERLIN_OFFICE, "2026-11-26T16:00:00+01:00", False, id="end-exclusive"),
        pytest.param(BERLIN_OFFICE, "2026-11-28T10:00:00+01:00", False, id="saturday"),
        pytest.param(BERLIN_OFFICE, "2026-11-26T08:30:00+00:00", True, id="utc-input-converted"),
        pytest.param(BERLIN_OFFICE, "2026-07-02T07:30:00+00:00", True, id="summer-time-utc+2"),
        pytest.param(BERLIN_OFFICE, "2026-07-02T14:30:00+00:00", False, id="summer-16:30-local"),
        pytest.param(NIGHT, "2026-11-27T23:00:00+01:00", True, id="friday-late"),
        pytest.param(
            NIGHT, "2026-11-28T01:30:00+01:00", True, id="saturday-early-belongs-to-friday"
        ),
        pytest.param(NIGHT, "2026-11-28T02:00:00+01:00", False, id="saturday-end-exclusive"),
        pytest.param(
            NIGHT, "2026-11-27T01:30:00+01:00", False, id="friday-early-belongs-to-thursday"
        ),
        pytest.param(NIGHT, "2026-11-27T21:59:00+01:00", False, id="friday-before-start"),
        # 2026-03-29: Berlin springs forward at 02:00 CET to 03:00 CEST; 02:xx never happens.
        pytest.param(DST_EDGE, "2026-03-29T00:59:00+00:00", False, id="spring-01:59-local"),
        pytest.param(DST_EDGE, "2026-03-29T01:00:00+00:00", False, id="spring-03:00-local"),
        pytest.param(DST_EDGE, "2026-03-30T00:30:00+00:00", True, id="next-day-02:30"),
        # 2026-10-25: Berlin falls back at 03:00 CEST to 02:00 CET; 02:xx happens twice.
        pytest.param(DST_EDGE, "2026-10-25T00:30:00+00:00", True, id="fall-first-02:30"),
        pytest.param(DST_EDGE, "2026-10-25T01:30:00+00:00", True, id="fall-second-02:30"),
        pytest.param(DST_EDGE, "2026-10-25T02:30:00+00:00", False, id="fall-03:30"),
        # 2026-11-01: New York falls back at 02:00 EDT to 01:00 EST.
        pytest.param(NEW_YORK, "2026-11-01T05:30:00+00:00", True, id="ny-01:30-edt"),
        pytest.param(NEW_YORK, "2026-11-01T06:30:00+00:00", True, id="ny-01:30-est"),
        pytest.param(NEW_YORK, "2026-11-01T08:30:00+00:00", False, id="ny-03:30-est"),
        pytest.param(TWO, "2026-11-28T23:59:00+00:00", True, id="list-whole-saturday"),
        pytest.param(TWO, "2026-11-29T23:30:00+00:00", True, id="list-tokyo-monday-08:30"),
        pytest.param(TWO, "2026-11-30T10:00:00+00:00", False, id="list-neither"),
    ],
)
def test_windows(schedule: str, at: str, holds: bool) -> None:
    """Wall-clock windows in the window's zone, start-inclusive, end-exclusive."""
    assert _holds(_rule(schedule), at) is holds


def test_outside_reason_and_detail() -> None:
    """Outside every window is `outside_schedule`, with the windows in the detail."""
    ctx = RequestContext("GET", "h", "/", now=datetime.fromisoformat("2026-11-28T10:00:00+01:00"))
    result = _rule(BERLIN_OFFICE).when.check(ctx, {})
    assert (result.outcome, result.reason) == (Outcome.FAILS, Reason.OUTSIDE_SCHEDULE)
    assert "mon,tue,wed,thu 09:00-16:00 Europe/Berlin" in result.detail


def _issues(schedule: str) -> list[tuple[int | None, str | None, str | None, str]]:
    text = HEADER + f"  - id: r\n    effect: allow\n    when:\n      schedule: {schedule}\n"
    with pytest.raises(PolicyError) as raised:
        load_policy_text(text, "p.yaml")
    return [(i.line, i.rule_id, i.field, i.message) for i in raised.value.issues]


@pytest.mark.parametrize(
    ("schedule", "field", "message"),
    [
        pytest.param('{timezone: Mars/Olympus}', "when.schedule.timezone", "unknown time zone 'Mars/Olympus' (expected an IANA name, e.g. Europe/Berlin)", id="unknown-zone"),
        pytest.param('{timezone: ../../etc/passwd}', "when.schedule.timezone", "unknown time zone '../../etc/passwd' (expected an IANA name, e.g. Europe/Berlin)", id="path-as-zone"),
        pytest.param('{days: [mon]}', "when.schedule.timezone", "required (an IANA zone, e.g. Europe/Berlin)", id="zone-missing"),
        pytest.param('{timezone: UTC, days: [monday]}', "when.schedule.days[0]", "unknown day 'monday' (expected one of: mon, tue, wed, thu, fri, sat, sun)", id="bad-day"),
        pytest.param('{timezone: UTC, days: []}', "when.schedule.days", "must not be empty (omit it for every day)", id="no-days"),
        pytest.param('{timezone: UTC, hours: "9:00-17:00"}', "when.schedule.hours", "invalid hours '9:00-17:00' (expected HH:MM-HH:MM, e.g. 09:00-17:30 or 22:00-02:00; start and end differ, end may be 24:00)", id="one-digit-hour"),
        pytest.param('{timezone: UTC, hours: "09:00-24:30"}', "when.schedule.hours", "invalid hours '09:00-24:30' (expected HH:MM-HH:MM, e.g. 09:00-17:30 or 22:00-02:00; start and end differ, end may be 24:00)", id="past-24"),
        pytest.param('{timezone: UTC, hours: "10:00-10:00"}', "when.schedule.hours", "invalid hours '10:00-10:00' (expected HH:MM-HH:MM, e.g. 09:00-17:30 or 22:00-02:00; start and end differ, end may be 24:00)", id="empty-window"),
        pytest.param('{timezone: UTC, hours: "09:60-10:00"}', "when.schedule.hours", "invalid hours '09:60-10:00' (expected HH:MM-HH:MM, e.g. 09:00-17:30 or 22:00-02:00; start and end differ, end may be 24:00)", id="minute-60"),
        pytest.param('{timezone: UTC, hour: "09:00-10:00"}', "when.schedule.hour", "unknown key 'hour' (expected one of: days, hours, timezone)", id="unknown-key"),
        pytest.param('[]', "when.schedule", "must not be empty (omit it for no schedule)", id="empty-list"),
        pytest.param('[{timezone: UTC}, {timezone: Nowhere}]', "when.schedule[1].timezone", "unknown time zone 'Nowhere' (expected an IANA name, e.g. Europe/Berlin)", id="second-window"),
    ],
)  # fmt: skip
def test_load_errors(schedule: str, field: str, message: str) -> None:
    """Each bad schedule is one located issue naming the rule and the field."""
    assert _issues(schedule) == [(8, "r", field, message)]
