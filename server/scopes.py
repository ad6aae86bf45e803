"""What the pure ASGI middlewares read of a request's scope, read as the router reads it."""

from __future__ import annotations

from starlette.types import Scope

__all__ = ["routed_path"]


def routed_path(scope: Scope) -> str:
    """The path the app routes on: `scope["path"]` without the `root_path` a proxy mounts the
    app under (`uvicorn --root-path /ttc` gives `/ttc/v1/models`, routed as `/v1/models`)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path
