"""Verifiers: reward models and judges that score candidate answers, by kind in `registry`."""

__all__: list[str] = []
