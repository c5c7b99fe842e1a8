"""Every route of the app, through included routers, so tests can enumerate them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    route: Any  # the route object: `.dependant` for FastAPI routes

    def depends_on(self, function: Any) -> bool:
        """Whether `function` is among the route's dependencies, at any depth."""

        def walk(dependant: Any) -> bool:
            return any(d.call is function or walk(d) for d in dependant.dependencies)

        dependant = getattr(self.route, "dependant", None)
        return dependant is not None and walk(dependant)


def operations(app: Any) -> list[Operation]:
    """(method, path) of every route; HEAD (answered by GET) left out."""
    found: list[Operation] = []
    for route in app.routes:
        # Newer FastAPI keeps an included router as one route; older ones flatten it.
        contexts = getattr(route, "effective_route_contexts", None)
        pairs = (
            [(c.path, c.original_route) for c in contexts()] if contexts else [(route.path, route)]
        )
        for path, original in pairs:
            for method in sorted(getattr(original, "methods", None) or ()):
                if method != "HEAD":
                    found.append(Operation(method, path, original))
    return found
