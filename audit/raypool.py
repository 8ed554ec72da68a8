"""Audits on a pool of long-lived Ray actors (the Ray edge of the library; thin).

Each :class:`SpectraWorker` actor opens the registry and imports peft once, then audits one
adapter per call and commits the unit to the store itself (workers write in parallel; the
store must be reachable from every node: a shared folder or an object store). The driver keeps
at most one call in flight per actor and receives a small report per unit, so a listing of
10,000 adapters never becomes 10,000 pending object refs.

Fault tolerance is Ray's: actors are created with ``max_restarts`` and ``max_task_retries``, so a
worker process or node that dies mid-call is restarted and the call re-sent. An adapter that
kills its actor until the restarts are spent becomes a ``worker_crashed`` finding, and a fresh
actor takes the dead one's place.

Resources are declared per actor (``num_cpus``, ``num_gpus``) so that probe actors can ask for
a GPU beside CPU-only spectra actors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import ray

from audit.errors import PermanentAuditError
from audit.limits import DEFAULT_LIMITS, Limits
from audit.records import AdapterRef, AuditResult
from audit.registry.base import Registry
from audit.store.parquet import ParquetStore
from audit.unit import failed_result
from audit.version import ANALYZER_VERSION
from audit.worker import Deferred, Reported, commit

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> dict[str, float]:
    """Connect to Ray: ``address`` (or ``$RAY_ADDRESS``) joins a cluster; otherwise start Ray in
    this process with ``num_cpus`` (default: this machine's CPUs). No-op if already connected.

    Returns:
        The cluster's total resources (``{"CPU": 2.0, ...}``).
    """
    if not ray.is_initialized():
        # token authentication is what we want for an in-process cluster; its announcement is noise
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
        if address:  # an existing cluster (or a Ray client "ray://" address): its own settings apply
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **kwargs)
    return dict(ray.cluster_resources())


@ray.remote
class SpectraWorker:
    """One long-lived auditor: opens the registry once, audits one adapter per call."""

    def __init__(self, registry: str | Registry, store: ParquetStore, limits: dict[str, Any],
                 analyzer_version: str) -> None:
        import torch

        from audit.registry import open_registry

        torch.set_num_threads(1)  # one actor per CPU: no oversubscription
        self.registry = open_registry(registry) if isinstance(registry, str) else registry
        self.store = store
        self.limits = Limits(**limits)
        self.analyzer_version = analyzer_version

    def audit(self, ref: AdapterRef) -> Reported:
        """Audit ``ref`` and commit its unit to the store; returns the small report."""
        from audit.worker import audit_and_store

        return audit_and_store(self.registry, self.store, ref, limits=self.limits,
                               analyzer_version=self.analyzer_version)

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


class RayExecutor:
    """Runs :func:`audit.worker.process_ref` over refs on a pool of :class:`SpectraWorker` actors.

    Args:
        registry: the registry spec the actors open (``local:/path``, ``hub:org``), or a
            picklable :class:`Registry` object.
        workers: number of actors (default: the cluster's CPUs).
        limits, analyzer_version: passed to every audit.
        num_cpus, num_gpus: resources each actor reserves.
        max_restarts, max_task_retries: Ray's fault tolerance for the actors. The default
            ``max_task_retries=-1`` re-sends a call until its actor answers or is dead for good
            (restarts spent), so a lost node or process costs a retry, never an adapter.
    """

    def __init__(self, registry: str | Registry, store: ParquetStore, *, workers: int | None = None,
                 limits: Limits = DEFAULT_LIMITS,
                 analyzer_version: str = ANALYZER_VERSION, num_cpus: float = 1, num_gpus: float = 0,
                 max_restarts: int = 3, max_task_retries: int = -1) -> None:
        self.registry, self.store = registry, store
        self.limits, self.analyzer_version = limits, analyzer_version
        self.workers = workers
        self.options = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_restarts": max_restarts,
                        "max_task_retries": max_task_retries, "scheduling_strategy": "SPREAD"}
        self.actors: list[Any] = []

    def _new_actor(self) -> Any:
        return SpectraWorker.options(**self.options).remote(
            self.registry, self.store, self.limits.model_dump(), self.analyzer_version)

    def map(self, refs: Sequence[AdapterRef]) -> Iterator[Reported]:
        """Yield one report per ref, in completion order, with one call in flight per actor.

        This is Ray's "limit pending tasks with ray.wait" pattern over an actor pool (what
        ``ray.util.ActorPool`` does), keeping which ref each call carries so that a call lost
        with its actor can be reported for that adapter.
        """
        if not refs:
            return
        n = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // self.options["num_cpus"]))
        self.actors = [self._new_actor() for _ in range(min(n, len(refs)))]
        idle = list(self.actors)
        in_flight: dict[Any, tuple[AdapterRef, Any]] = {}
        feed = iter(refs)

        def fill() -> None:
            while idle:
                ref = next(feed, None)
                if ref is None:
                    return
                actor = idle.pop()
                in_flight[actor.audit.remote(ref)] = (ref, actor)

        fill()
        try:
            while in_flight:
                [done], _ = ray.wait(list(in_flight), num_returns=1)
                ref, actor = in_flight.pop(done)
                try:
                    outcome = ray.get(done)
                except ray.exceptions.ActorDiedError as exc:  # restarts spent: it kills every worker
                    log.warning("worker died for good auditing %s: %s", ref.adapter_id, exc)
                    outcome = commit(self.store, self._crashed(ref, exc))
                    actor = self._new_actor()
                    self.actors.append(actor)
                except ray.exceptions.RayActorError as exc:  # unavailable for now: try next run
                    log.warning("worker unavailable auditing %s: %s", ref.adapter_id, exc)
                    outcome = Deferred(ref, f"worker unavailable: {type(exc).__name__}")
                idle.append(actor)
                yield outcome
                fill()
        finally:
            for actor in self.actors:
                ray.kill(actor)
            self.actors = []

    def _crashed(self, ref: AdapterRef, exc: Exception) -> AuditResult:
        err = PermanentAuditError(
            f"the worker auditing this adapter died {self.options['max_restarts'] + 1} times "
            f"({type(exc).__name__}); not retried until the analyzer changes", code="worker_crashed")
        return failed_result(ref, err, "audit", analyzer_version=self.analyzer_version)
