"""The Prometheus text exposition format: every sample of a /metrics page, keyed by name and labels."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_samples(text: str) -> Samples:
    """Every sample of a /metrics page, keyed by (sample name, labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


async def metric(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    """One sample from the gateway's /metrics (0 when the series does not exist yet)."""
    text = (await client.get("/metrics")).text
    return parse_samples(text).get((name, frozenset(labels.items())), 0.0)
