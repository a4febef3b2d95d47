"""Console markup: values are escaped once, markup is never escaped again."""

from __future__ import annotations

import pytest

from authz_server.console.markup import Markup, escape, join, render


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;", id="element"),
        pytest.param('" onmouseover="x', "&quot; onmouseover=&quot;x", id="double-quote"),
        pytest.param("' autofocus '", "&#x27; autofocus &#x27;", id="single-quote"),
        pytest.param("a & b", "a &amp; b", id="ampersand"),
        pytest.param("{other}", "{other}", id="braces-are-data"),
        pytest.param(42, "42", id="number"),
    ],
)  # fmt: skip
def test_values_are_escaped(value: object, shown: str) -> None:
    assert render('<p title="{v}">{v}</p>', v=value) == f'<p title="{shown}">{shown}</p>'


def test_markup_is_not_escaped_twice() -> None:
    inner = render("<b>{x}</b>", x="<i>")
    assert render("<p>{inner}</p>", inner=inner) == "<p><b>&lt;i&gt;</b></p>"
    assert escape(inner) is inner
    assert join([inner, Markup("<br>")], "") == "<b>&lt;i&gt;</b><br>"
    assert join(["<br>"]) == "&lt;br&gt;"  # type: ignore[list-item]
