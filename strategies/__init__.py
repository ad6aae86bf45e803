"""Test-time compute strategies, one module per algorithm, chosen by name in `registry`."""

__all__: list[str] = []
