"""Reading the members of the API's JSON objects tolerantly: a member that is missing or
of another type reads as a default, except the few a resource cannot do without."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any, overload

from longrun_client.errors import InvalidResponse


def parse_datetime(value: Any) -> datetime | None:
    """An RFC 3339 time, or None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def text(data: Mapping[str, Any], name: str) -> str | None:
    """A string member, or None."""
    value = data.get(name)
    return value if isinstance(value, str) else None


def required_text(data: Mapping[str, Any], name: str) -> str:
    """A string member the resource cannot do without (its `id`): `InvalidResponse` if
    missing."""
    value = data.get(name)
    if not isinstance(value, str):
        raise InvalidResponse(f"the answer has no {name!r}")
    return value


@overload
def integer(data: Mapping[str, Any], name: str) -> int: ...
@overload
def integer(data: Mapping[str, Any], name: str, default: None) -> int | None: ...
def integer(data: Mapping[str, Any], name: str, default: int | None = 0) -> int | None:
    """An integer member (not a boolean), or `default`."""
    value = data.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def objects(value: Any) -> list[dict[str, Any]]:
    """The JSON objects of a list member; [] when it is not a list."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def json_object(value: Any) -> dict[str, Any]:
    """A resource's JSON object: `InvalidResponse` for anything else."""
    if not isinstance(value, dict):
        raise InvalidResponse(f"expected a JSON object, got {type(value).__name__}")
    return value


class Resource:
    """What every resource has: `raw`, and `extra`, the members this client does not know."""

    raw: dict[str, Any]

    @property
    def extra(self) -> dict[str, Any]:
        """Members of `raw` that are not attributes of this class."""
        known = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return {k: v for k, v in self.raw.items() if k not in known}
