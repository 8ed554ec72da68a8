"""Periodic recalibration as a Prefect flow: the steps of
:func:`audit.classify.recalibration_cycle.recalibration_cycle` as tasks, the re-audit after a promotion
as the ``reaudit`` sub-flow. Thin: the work is in ``audit.classify``."""

from __future__ import annotations

import flows._prefect  # noqa: F401  (quiet defaults before Prefect loads)

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from audit.classify import recalibration_cycle as cycle
from flows.reaudit import reaudit

STEPS = cycle.CycleSteps(
    retrain=task(name="retrain-and-evaluate", cache_policy=NO_CACHE)(cycle.retrain),
    reaudit=reaudit,
    score_unjudged=task(name="score-unjudged", cache_policy=NO_CACHE)(cycle.score_unjudged),
)


@flow(name="recalibrate", log_prints=True)
def recalibrate(store: str = "audit-store", label_source: str = "card", min_auc: float = 0.6,
                max_ece: float = 0.3, auc_tolerance: float = 0.05) -> dict:
    """Retrain, gate, promote and re-audit (see :func:`audit.classify.recalibration_cycle.recalibration_cycle`)."""
    return cycle.recalibration_cycle(store, label_source, min_auc, max_ece, auc_tolerance, steps=STEPS)
