"""Root aliases of /v1 routes, for clients that call the server's root (Infinity's, litellm `infinity/`).

Each alias is the same endpoint with the same dependencies (auth included) and the same billing; it is left
out of the OpenAPI document, which lists each operation once, under /v1.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute


def root_alias_router(*routers: APIRouter, served_elsewhere: frozenset[str] = frozenset()) -> APIRouter:
    """Every /v1/... route of `routers` also at /..., with the router's own dependencies (e.g. auth), except
    the root paths in `served_elsewhere` (a root route of its own answers there)."""
    aliases = APIRouter(include_in_schema=False)
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute) or not route.path.startswith("/v1/"):
                continue
            if route.path.removeprefix("/v1") in served_elsewhere:
                continue
            aliases.add_api_route(
                route.path.removeprefix("/v1"),
                route.endpoint,
                methods=sorted(route.methods or ()),
                response_model=route.response_model,
                status_code=route.status_code,
                dependencies=[*router.dependencies, *route.dependencies],
                responses=route.responses,
                response_class=route.response_class,
                name=f"{route.name}_at_root",
                include_in_schema=False,
            )
    return aliases
