"""`@frozen`: immutable value classes that cost nothing extra to build.

`@dataclass(frozen=True)` builds each instance through `object.__setattr__`, one call per
field: about 3 µs for a `Decision`, and a Check builds several such values. A `@frozen`
class is frozen where the check is free, in the type checker: `mypy --strict` rejects any
assignment to a field. At run time it is a plain slotted dataclass, compared and hashed by
value like a frozen one. `dataclasses.replace` makes a changed copy, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar, dataclass_transform

__all__ = ["frozen"]

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen(cls: type[_T]) -> type[_T]:
    """A slotted dataclass, frozen for the type checker (see the module docstring)."""
    return dataclass(slots=True, unsafe_hash=True)(cls)
