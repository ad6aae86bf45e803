"""Model servers: the backend protocol and its implementations, by name in `registry`."""

__all__: list[str] = []
