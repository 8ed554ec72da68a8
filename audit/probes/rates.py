"""A probe's rate: ``k`` of ``n`` trials with its Wilson 95% interval, as a stored row."""

from __future__ import annotations

from dataclasses import dataclass

from audit.analyzers.analysis import MetricRow
from audit.probes.judge import wilson_interval


@dataclass(frozen=True)
class RateCount:
    """``k`` of ``n`` trials: a rate with its Wilson 95% interval."""

    k: int
    n: int

    def row(self, metric: str, judge: str | None) -> MetricRow:
        lo, hi = wilson_interval(self.k, self.n)
        return MetricRow(metric=metric, value=self.k / self.n if self.n else None, n=self.n, ci_low=lo, ci_high=hi,
                        judge=judge)
