"""Prometheus's exposition (text) format, parsed into samples that can be summed and subtracted."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class Samples:
    """One scrape: every sample by name and labels."""

    values: Mapping[Key, float]

    @classmethod
    def parse(cls, text: str) -> Samples:
        return cls(
            {
                (sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            }
        )

    def get(self, name: str, **labels: str) -> float:
        """The sum over the series of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(
            value
            for (sample, series), value in self.values.items()
            if sample == name and wanted <= series
        )

    def __sub__(self, earlier: Samples) -> Samples:
        return Samples(
            {key: value - earlier.values.get(key, 0.0) for key, value in self.values.items()}
        )
