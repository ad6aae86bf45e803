"""Benchmarks of the gateway, each run from the checkout's root as `python -m bench.<name>`.

They talk to the gateway over HTTP and import nothing from `server/` (bench/README.md lists
them); `bench.replay` alone runs the registered strategies in process, on stored samples.
"""

__all__: list[str] = []
