"""Serving a request: validating it, running its strategy, and rendering each endpoint's answer."""

__all__: list[str] = []
