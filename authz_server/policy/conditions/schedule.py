"""`when.schedule`: time windows in IANA time zones (docs/policy/conditions.md#schedule), judged on
local wall time.

    schedule: {timezone: Europe/Berlin, days: [mon, tue, wed, thu], hours: "09:00-16:00"}
    schedule:
      - {timezone: America/New_York, days: [fri], hours: "22:00-02:00"}   # crosses midnight
      - {timezone: UTC, days: [sat, sun]}                                  # whole days

The time is the Check's (the server `Clock`, or `check --at`). It is converted to the
window's zone and compared as wall-clock time, which is what "09:00 in Berlin" means on
both sides of a daylight-saving change: on the spring-forward day 02:00-03:00 does not
exist locally, on the fall-back day 02:00-03:00 happens twice and both are inside a
window covering it. `hours` is start-inclusive, end-exclusive; `24:00` ends at midnight.
A window that crosses midnight belongs to the day it starts on: `fri 22:00-02:00` holds
on Saturday at 01:30 and not on Friday at 01:30. `days` defaults to every day, `hours`
to the whole day. Any window holding is enough.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass

from authz_server.core.decision import Reason
from authz_server.core.errors import quote
from authz_server.core.yaml_source import Fields, Map, Seq, Value
from authz_server.policy.conditions.base import HOLDS, ConditionResult, RequestContext

__all__ = ["ScheduleCondition", "Window", "compile_schedule"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"(\d\d):(\d\d)-(\d\d):(\d\d)")
_KEYS = frozenset({"timezone", "days", "hours"})


@dataclass(frozen=True, slots=True)
class Window:
    zone: zoneinfo.ZoneInfo
    #: Monday is 0, as in `datetime.weekday()`.
    days: frozenset[int]
    #: Minutes after local midnight; `end` may be smaller than `start` (crosses midnight).
    start: int
    end: int
    text: str

    def contains(self, ctx: RequestContext) -> bool:
        local = ctx.now.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        today = local.weekday()
        if self.start < self.end:
            return today in self.days and self.start <= minute < self.end
        # Crosses midnight: the late part belongs to today, the early part to yesterday.
        if minute >= self.start:
            return today in self.days
        return minute < self.end and (today - 1) % 7 in self.days


@dataclass(frozen=True, slots=True)
class ScheduleCondition:
    windows: tuple[Window, ...]
    kind: str = "schedule"

    def evaluate(self, ctx: RequestContext, params: Mapping[str, str]) -> ConditionResult:
        for window in self.windows:
            if window.contains(ctx):
                return HOLDS
        shown = "; ".join(w.text for w in self.windows)
        return ConditionResult.fails(
            Reason.OUTSIDE_SCHEDULE, f"{ctx.now.isoformat()} is outside {shown}"
        )


def compile_schedule(fields: Fields, value: Value, path: str) -> ScheduleCondition | None:
    """One window or a list of windows; every bad field is an issue."""
    items = value.items if isinstance(value, Seq) else (value,)
    if isinstance(value, Seq) and not value.items:
        fields.issue(value.line, path, "must not be empty (omit it for no schedule)")
        return None
    before = len(fields.issues)
    windows: list[Window] = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]" if isinstance(value, Seq) else path
        window = _window(fields, item, where)
        if window is not None:
            windows.append(window)
    if len(fields.issues) != before:
        return None
    return ScheduleCondition(tuple(windows))


def _window(fields: Fields, value: Value, path: str) -> Window | None:
    node = fields.mapping(value, path, _KEYS)
    if node is None:
        return None
    before = len(fields.issues)
    zone = _zone(fields, node, path)
    days = _days(fields, node, path)
    start, end = 0, 24 * 60
    hours_text = "00:00-24:00"
    if "hours" in node.entries:
        hours = fields.string(node.entries["hours"], f"{path}.hours")
        parsed = _hours(hours) if hours is not None else None
        if hours is not None and parsed is None:
            fields.issue(
                node.entries["hours"].line,
                f"{path}.hours",
                f"invalid hours {quote(hours)} (expected HH:MM-HH:MM, e.g. 09:00-17:30 "
                "or 22:00-02:00; start and end differ, end may be 24:00)",
            )
        elif parsed is not None and hours is not None:
            (start, end), hours_text = parsed, hours
    if zone is None or days is None or len(fields.issues) != before:
        return None
    names = ",".join(DAYS[d] for d in sorted(days))
    return Window(zone, days, start, end, f"{names} {hours_text} {zone.key}")


def _zone(fields: Fields, node: Map, path: str) -> zoneinfo.ZoneInfo | None:
    if "timezone" not in node.entries:
        fields.issue(node.line, f"{path}.timezone", "required (an IANA zone, e.g. Europe/Berlin)")
        return None
    name = fields.string(node.entries["timezone"], f"{path}.timezone")
    if name is None:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        fields.issue(
            node.entries["timezone"].line,
            f"{path}.timezone",
            f"unknown time zone {quote(name)} (expected an IANA name, e.g. Europe/Berlin)",
        )
        return None


def _days(fields: Fields, node: Map, path: str) -> frozenset[int] | None:
    if "days" not in node.entries:
        return frozenset(range(7))

    def day(text: str) -> int:
        key = text.strip().lower()
        if key not in DAYS:
            raise ValueError(f"unknown day {quote(text)} (expected one of: {', '.join(DAYS)})")
        return DAYS.index(key)

    listed = fields.compiled_list(
        node.entries["days"], f"{path}.days", day, empty="must not be empty (omit it for every day)"
    )
    return None if listed is None else frozenset(d for _, d in listed)


def _hours(text: str) -> tuple[int, int] | None:
    match = _HOURS.fullmatch(text.strip())
    if match is None:
        return None
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        return None
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        return None
    return start, end
