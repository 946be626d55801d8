"""Prometheus export: metric families, the qoe serve exporter, Pushgateway pushes."""

from __future__ import annotations

from qoe.exporter.metrics import ResultCollector, family_names

__all__ = ["ResultCollector", "family_names"]
