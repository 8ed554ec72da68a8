"""Audits on a pool of long-lived Ray actors (the Ray edge of the library; thin).

Each :class:`AnalyzerWorker` actor builds its analyzers once (the spectra analyzer opens the
registry; a probe loads its base model once), then runs one job per call (up to 8 adapters for
spectra, :func:`audit.pipeline.executors.batch_jobs`; a few adapters of one base for the probes, answered
in shared batches) and commits the units to the store itself (workers write in parallel; the
store must be reachable from every node: a shared folder or an object store). The driver keeps
at most one call in flight per actor and receives a small report per unit, so a listing of
10,000 adapters never becomes 10,000 pending object refs.

Fault tolerance is Ray's: actors are created with ``max_restarts`` and ``max_task_retries``, so a
worker process or node that dies mid-call is restarted and the call re-sent. An adapter that
kills its actor until the restarts are spent becomes a ``worker_crashed`` finding, and a fresh
actor takes the dead one's place; when the dead call carried several adapters, each is retried
alone first (only the one that kills a worker by itself gets the finding).

Resources are declared per actor (``num_cpus``, ``num_gpus``): probe actors reserve a GPU each
where the cluster has GPUs, and the machine's CPU threads otherwise; spectra actors one CPU each.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import ray

from audit.analyzers.base import AnalyzerContext, AnalyzerSpec, Job
from audit.limits import DEFAULT_LIMITS, Limits
from audit.pipeline.commit import Reported, commit
from audit.pipeline.executors import Analyzers, batch_jobs, limit_blas_threads, pick_device, spectra_specs
from audit.records import AdapterRef, Deferred
from audit.registry.base import Registry
from audit.store.parquet import ParquetStore
from audit.version import ANALYZER_VERSION

log = logging.getLogger(__name__)


_stopping: threading.Thread | None = None
"""The thread running ``ray.shutdown`` for :meth:`RayExecutor.stop_ray` (joined before Ray is
started again, and by the interpreter at exit: it is not a daemon)."""


def init_ray(address: str | None = None, num_cpus: int | None = None) -> dict[str, float]:
    """Connect to Ray: ``address`` (or ``$RAY_ADDRESS``) joins a cluster; otherwise start Ray in
    this process with ``num_cpus`` (default: this machine's CPUs). No-op if already connected.
    A shutdown still running (:meth:`RayExecutor.stop_ray`) is waited for first.

    Returns:
        The cluster's total resources (``{"CPU": 2.0, ...}``).
    """
    if _stopping is not None:
        _stopping.join()
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
class AnalyzerWorker:
    """One long-lived worker: builds its analyzers once (opens the registry, loads a base model on
    first need), then runs one job per call and commits the units itself."""

    def __init__(self, registry: str | Registry | None, store: ParquetStore, limits: dict[str, Any],
                 specs: tuple[AnalyzerSpec, ...], num_threads: int = 1, num_gpus: float = 0) -> None:
        from audit.registry import open_registry

        # the CPUs this actor reserved, no more threads (no oversubscription): torch's where a model
        # runs here; else only the BLAS of numpy (spectra actors never import torch, which a torch
        # import in each actor made 4 s slower on the 10x realworld scan: 24.2-24.7 s vs 20.2-21.0 s)
        if any(s.kind.needs_base for s in specs):
            import torch

            torch.set_num_threads(max(1, num_threads))
        else:
            limit_blas_threads(num_threads)
        reg = open_registry(registry) if isinstance(registry, str) else registry
        ctx = AnalyzerContext(store=store, registry=reg, limits=Limits(**limits), device=pick_device(num_gpus))
        self.analyzers = Analyzers(specs, ctx)

    def run(self, job: Job) -> list[Reported]:
        """Run ``job`` and commit its units; returns one small report per unit."""
        return self.analyzers.run(job)

    def device(self) -> str:
        return self.analyzers.ctx.device

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


SpectraWorker = AnalyzerWorker
"""The actor of the spectra stage (an :class:`AnalyzerWorker` running the spectra analyzer)."""


def actor_resources(specs: Sequence[AnalyzerSpec], cluster: dict[str, float], workers: int | None) -> dict[str, float]:
    """What each actor reserves: a GPU per actor for analyzers that want one where the cluster has
    GPUs; otherwise CPUs (spectra: one per actor; model analyzers: the cluster's CPUs shared
    among ``workers`` actors, default one)."""
    from audit.analyzers.base import ANALYZERS

    wants_gpu = any(s.kind.resources.num_gpus > 0 for s in specs)
    if wants_gpu and cluster.get("GPU", 0) >= 1:
        return {"num_cpus": 1, "num_gpus": 1}
    if wants_gpu:
        return {"num_cpus": max(1, int(cluster.get("CPU", 1)) // max(1, workers or 1)), "num_gpus": 0}
    return {"num_cpus": 1, "num_gpus": 0}


class RayExecutor:
    """Runs jobs (or adapter refs) on a pool of :class:`AnalyzerWorker` actors.

    Args:
        registry: the registry spec the actors open (``local:/path``, ``hub:org``), or a
            picklable :class:`Registry` object.
        workers: number of actors (default: the cluster's CPUs for spectra; one per GPU, else one,
            for model analyzers).
        limits, analyzer_version: passed to every audit.
        analyzers: the analyzers each actor builds (default: spectra).
        num_cpus, num_gpus: resources each actor reserves (default: :func:`actor_resources`).
        ray_address: the cluster to join when Ray is not started yet (see :func:`init_ray`; Ray is
            only started when there is work).
        max_restarts, max_task_retries: Ray's fault tolerance for the actors. The default
            ``max_task_retries=-1`` re-sends a call until its actor answers or is dead for good
            (restarts spent), so a lost node or process costs a retry, never an adapter.
    """

    def __init__(self, registry: str | Registry, store: ParquetStore, *, workers: int | None = None,
                 limits: Limits = DEFAULT_LIMITS, analyzer_version: str = ANALYZER_VERSION,
                 analyzers: Sequence[AnalyzerSpec] | None = None, num_cpus: float | None = None,
                 num_gpus: float | None = None, max_restarts: int = 3, max_task_retries: int = -1,
                 ray_address: str | None = None) -> None:
        self.registry, self.store, self.ray_address = registry, store, ray_address
        self.limits, self.analyzer_version = limits, analyzer_version
        self.specs = tuple(analyzers) if analyzers else spectra_specs(analyzer_version)
        self.workers = workers
        self.fixed = {k: v for k, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus)) if v is not None}
        self.options = {"max_restarts": max_restarts, "max_task_retries": max_task_retries,
                        "scheduling_strategy": "SPREAD"}
        self.actors: list[Any] = []
        self.started_ray = False
        """Whether this pool started Ray (no Ray was connected when it first needed one)."""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    def _new_actor(self) -> Any:
        opts = self.options
        return AnalyzerWorker.options(**opts).remote(
            self.registry, self.store, self.limits.model_dump(), self.specs, int(max(1, opts["num_cpus"])),
            opts["num_gpus"])

    def _pool_size(self, n_jobs: int | None) -> int:
        self.started_ray = self.started_ray or not ray.is_initialized()
        cluster = init_ray(self.ray_address)
        self.options.update(actor_resources(self.specs, cluster, self.workers) | self.fixed)
        if self.workers:
            n = self.workers
        elif self.options["num_gpus"] > 0:
            n = int(cluster.get("GPU", 1) // self.options["num_gpus"])
        else:
            n = int(cluster.get("CPU", 1) // self.options["num_cpus"])
        return max(1, n if n_jobs is None else min(n, n_jobs))

    def start(self) -> None:
        """Connect to Ray and create the pool's actors now, before the jobs are known (a scan
        calls it while the registry is being listed): the actors' processes start, import and
        build their analyzers in parallel with the listing. The next :meth:`map` uses them (its
        end, or :meth:`close`, removes them). The pool's size is :meth:`map`'s for an unknown
        number of jobs: ``workers``, else the cluster's CPUs (GPUs for model analyzers) per actor.

        Raises:
            ConnectionError: the cluster at ``ray_address`` cannot be reached (``ray.init``).
        """
        if not self.actors:
            self.actors = [self._new_actor() for _ in range(self._pool_size(None))]

    def close(self) -> None:
        """Remove the pool's actors (those :meth:`start` made and no :meth:`map` used)."""
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    def stop_ray(self) -> threading.Thread | None:
        """Stop the Ray this pool started (``ray.shutdown``) on a thread, and return the thread
        (``None`` when the pool did not start Ray: a cluster joined, a Ray session of the caller's).

        ``ray.shutdown`` sends SIGTERM to Ray's processes and waits for each to exit: 1.1-1.5 s
        measured here, mostly asleep, in which a scan's last steps (compaction, judging, the
        summary) run. Ray's own shutdown at interpreter exit then has nothing to do (it would first
        sleep 0.5 s). The next :func:`init_ray` waits for the thread, and so does the interpreter at
        exit. Call it when the pool's work is done: its actors are gone with Ray.
        """
        global _stopping
        if not self.started_ray or not ray.is_initialized():
            return None
        self.close()
        self.started_ray = False
        _stopping = threading.Thread(target=ray.shutdown, name="lora-audit-ray-shutdown")
        _stopping.start()
        return _stopping

    def map(self, items: Sequence[AdapterRef | Job]) -> Iterator[Reported]:
        """Yield one report per unit, in completion order, with one call in flight per actor.

        This is Ray's "limit pending tasks with ray.wait" pattern over an actor pool (what
        ``ray.util.ActorPool`` does), keeping which job each call carries so that a call lost
        with its actor can be reported for its adapters.
        """
        if not items:
            self.close()
            return
        if not self.actors:
            self.actors = [self._new_actor() for _ in range(self._pool_size(len(items)))]
        jobs = batch_jobs(items, self.names, len(self.actors))
        idle = list(self.actors)
        in_flight: dict[Any, tuple[Job, Any]] = {}
        feed = iter(jobs)
        alone: list[Job] = []  # the adapters of a call whose actor died for good, one per call

        def fill() -> None:
            while idle:
                job = alone.pop() if alone else next(feed, None)
                if job is None:
                    return
                actor = idle.pop()
                in_flight[actor.run.remote(job)] = (job, actor)

        fill()
        started = {ref: time.monotonic() for ref in in_flight}
        n_done = 0
        try:
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=HEARTBEAT_S)
                if not ready:  # a long call (a base's first references, SAEs): say what runs
                    _heartbeat(in_flight, started, n_done, len(jobs))
                    continue
                done = ready[0]
                n_done += 1
                job, actor = in_flight.pop(done)
                try:
                    outcomes = ray.get(done)
                except ray.exceptions.ActorDiedError as exc:  # restarts spent: it kills every worker
                    actor = self._new_actor()
                    self.actors.append(actor)
                    if len(job.targets) > 1:  # which of them kills it is not known: each goes alone
                        log.warning("worker died for good on %s; its %d targets are retried one by one: %s",
                                    _describe(job), len(job.targets), exc)
                        alone.extend(Job((t,), job.analyzers) for t in reversed(job.targets))
                        outcomes = []
                    else:
                        log.warning("worker died for good on %s: %s", _describe(job), exc)
                        outcomes = [commit(self.store, r) for r in self._crashed(job, exc)]
                except ray.exceptions.RayActorError as exc:  # unavailable for now: try next run
                    log.warning("worker unavailable on %s: %s", _describe(job), exc)
                    outcomes = [Deferred(t.ref, f"worker unavailable: {type(exc).__name__}")
                                for t in job.targets if t.ref is not None]
                idle.append(actor)
                yield from outcomes
                fill()
                started.update({ref: time.monotonic() for ref in in_flight if ref not in started})
        finally:
            self.close()

    def _crashed(self, job: Job, exc: Exception) -> list[Any]:
        from audit.analyzers.results import failed_output

        message = (f"the worker running this job died {self.options['max_restarts'] + 1} times "
                   f"({type(exc).__name__}); not retried until the analyzer changes")
        out: list[Any] = []
        for spec in self.specs:
            if spec.name not in job.analyzers:
                continue
            analyzer = spec.create()
            for target in job.targets:
                if target.ref is None and not spec.kind.needs_base:
                    continue  # an analyzer of adapters alone has no record of a bare base
                out.append(failed_output(analyzer, target, "worker_crashed", message))
        return out


HEARTBEAT_S = 5.0
"""Seconds the driver waits on its actors before it says what is still running."""


def _heartbeat(in_flight: dict, started: dict, n_done: int, n_jobs: int) -> None:
    """Tell the current progress sink (``batch``) which call has been running longest, and for how long."""
    from audit.progress import current

    sink = current()
    if sink is None or not hasattr(sink, "batch") or not in_flight:
        return
    ref = min(in_flight, key=lambda r: started.get(r, time.monotonic()))
    job, _ = in_flight[ref]
    analyzers = ", ".join(job.analyzers)
    seconds = time.monotonic() - started.get(ref, time.monotonic())
    sink.batch(f"{analyzers} on {_describe(job)}: running {seconds:.0f} s", n_done, n_jobs)


def _describe(job: Job) -> str:
    return ", ".join(t.key for t in job.targets[:3]) + (" ..." if len(job.targets) > 3 else "")
