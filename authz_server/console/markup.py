"""HTML built by escaping every value: the only way text reaches a console page.

`render(TEMPLATE, name=value)` substitutes `{name}` fields; a value is HTML-escaped
(quotes too, so it is safe inside attribute values) unless it is already `Markup`, i.e.
produced by `render` or `join` from escaped parts. Templates are constants in the code,
never data.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Iterator, Mapping

__all__ = ["Markup", "escape", "join", "render"]


class Markup(str):
    """Text that is already HTML: never escaped again."""

    __slots__ = ()


def escape(value: object) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def join(parts: Iterable[Markup], separator: str = "\n") -> Markup:
    return Markup(separator.join(escape(p) for p in parts))


class _Escaped(Mapping[str, Markup]):
    def __init__(self, values: Mapping[str, object]) -> None:
        self._values = values

    def __getitem__(self, key: str) -> Markup:
        return escape(self._values[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def render(template: str, **values: object) -> Markup:
    """`template` with each `{name}` replaced by the escaped `values[name]`."""
    return Markup(template.format_map(_Escaped(values)))
