"""How jobs run: here, in this process (:class:`InProcessExecutor`); on Ray actors in
:mod:`audit.pipeline.raypool`. An executor builds its analyzers from picklable specs, sets them up once,
runs :class:`~audit.analyzers.base.Job` s (or bare adapter refs: every analyzer on that adapter) and
commits every result where it was computed, yielding a small report per unit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from audit.analyzers.base import AnalyzerContext, AnalyzerSpec, Job, Target, run_job
from audit.limits import DEFAULT_LIMITS, Limits
from audit.pipeline.commit import Reported, commit_all
from audit.records import AdapterRef
from audit.store.parquet import ParquetStore
from audit.version import ANALYZER_VERSION


class Executor(Protocol):
    """Runs jobs (or adapter refs) and commits each unit, yielding a report per unit as it finishes."""

    def map(self, items: Sequence[AdapterRef | Job]) -> Iterator[Reported]: ...


def spectra_specs(analyzer_version: str = ANALYZER_VERSION) -> tuple[AnalyzerSpec, ...]:
    """The default analyzers of an executor: the delta spectra alone."""
    return (AnalyzerSpec.of("spectra", version=analyzer_version),)


def as_job(item: AdapterRef | Job, names: tuple[str, ...]) -> Job:
    """A job for ``item``: a bare ref gets every analyzer in ``names``."""
    return item if isinstance(item, Job) else Job((Target(ref=item),), names)


MAX_BATCH = 8
"""Most adapters one spectra call carries (see :func:`batch_jobs`)."""
MAX_BATCH_BYTES = 64 * 2**20
"""A spectra call carries adapters up to this many bytes of listed files (an adapter larger than
that goes alone)."""


def batch_jobs(items: Sequence[AdapterRef | Job], names: tuple[str, ...], workers: int) -> list[Job]:
    """The calls for ``items`` on ``workers`` workers: bare refs grouped, in listing order, into
    jobs of up to :data:`MAX_BATCH` adapters and :data:`MAX_BATCH_BYTES` of files, at most a
    quarter of each worker's share (a short listing keeps one adapter per call, so every worker has
    work to the end); given jobs are kept as they are, before the new ones. Raises nothing.

    On a Ray actor a call costs about 3 ms of the actor's CPU and 1.5 ms of the driver's beyond the
    audit (about 8 ms per realworld adapter): 440 adapters on 2 actors took 2.47-2.66 s in calls
    of 8 against 3.39-4.96 s one by one (two runs each, 2 cores).
    """
    refs = [i for i in items if not isinstance(i, Job)]
    per = max(1, min(MAX_BATCH, len(refs) // (4 * max(1, workers))))
    out: list[Job] = [as_job(i, names) for i in items if isinstance(i, Job)]
    chunk: list[Target] = []
    size = 0
    for ref in refs:
        nbytes = sum(f.size or 0 for f in ref.files)
        if chunk and (len(chunk) >= per or size + nbytes > MAX_BATCH_BYTES):
            out.append(Job(tuple(chunk), names))
            chunk, size = [], 0
        chunk.append(Target(ref=ref))
        size += nbytes
    if chunk:
        out.append(Job(tuple(chunk), names))
    return out


def pick_device(num_gpus: float) -> str:
    """``cuda`` when a GPU was reserved and torch sees one, else ``cpu``."""
    if num_gpus <= 0:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Analyzers:
    """The analyzers of one worker (actor or process), built from specs and set up once."""

    def __init__(self, specs: Iterable[AnalyzerSpec], ctx: AnalyzerContext) -> None:
        self.by_name = {}
        for spec in specs:
            a = spec.create()
            a.setup(ctx)
            self.by_name[a.name] = a
        self.ctx = ctx

    def run(self, job: Job) -> list[Reported]:
        """Run ``job`` and commit its results; one report per unit."""
        chosen = [self.by_name[n] for n in job.analyzers if n in self.by_name]
        return commit_all(self.ctx.store, run_job(chosen, job.targets))


class InProcessExecutor:
    """Runs jobs one after the other in this process.

    Args:
        registry: where adapters are fetched from.
        store: where results go.
        limits: caps on what adapter files may declare.
        analyzer_version: the spectra version (when ``analyzers`` is not given).
        analyzers: the analyzers to build (default: spectra).
        device: ``cpu`` or ``cuda`` for analyzers that use a model (default: CUDA when visible).
    """

    def __init__(self, registry, store: ParquetStore, limits: Limits = DEFAULT_LIMITS,
                 analyzer_version: str = ANALYZER_VERSION, *, analyzers: Sequence[AnalyzerSpec] | None = None,
                 device: str | None = None) -> None:
        self.registry, self.store = registry, store
        self.limits, self.analyzer_version = limits, analyzer_version
        self.specs = tuple(analyzers) if analyzers else spectra_specs(analyzer_version)
        self.device = device
        self._workers: Analyzers | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    def map(self, items: Sequence[AdapterRef | Job]) -> Iterator[Reported]:
        """Run each item here, one after the other; one report per unit.

        The spectra alone run with one BLAS thread (threadpoolctl, as on a Ray actor of one CPU):
        their products are of ``d x r`` factors, where a second OpenBLAS thread spins more than it
        computes. Measured on the 10x realworld registry (440 adapters, 2 cores, 2 runs each): the
        audit step took 4.45-4.83 s of CPU for 3.42-3.81 s wall with the default two threads,
        3.47-4.61 s of CPU for 3.47-4.66 s wall with one.
        """
        if not items:
            return
        if self._workers is None:
            device = self.device or pick_device(1 if any(s.kind.needs_base or s.kind.resources.num_gpus > 0 for s in self.specs) else 0)
            ctx = AnalyzerContext(store=self.store, registry=self.registry, limits=self.limits, device=device)
            self._workers = Analyzers(self.specs, ctx)
        with limit_blas_threads(1) if not any(s.kind.needs_base for s in self.specs) else contextlib.nullcontext():
            for item in items:
                yield from self._workers.run(as_job(item, self.names))  # type: ignore[union-attr]


def limit_blas_threads(n: int):
    """Limit numpy's BLAS (OpenBLAS) to ``n`` threads, from now on; the returned
    ``threadpoolctl.threadpool_limits`` object restores the previous counts when used as a context
    manager (or by its ``restore_original_limits``)."""
    import numpy  # noqa: F401 - loads the BLAS that threadpoolctl limits
    from threadpoolctl import threadpool_limits

    return threadpool_limits(max(1, n), user_api="blas")


def probe_specs(names: Sequence[str] | None = None, n_prompts: int | None = None) -> tuple[AnalyzerSpec, ...]:
    """Specs of the analyzers that need the base model ``names`` (default: the directional measures
    and every behaviour probe), each probe on its first ``n_prompts`` prompts when given (else its
    default; analyzers without a prompt set ignore it).

    Raises:
        UnknownPluginError: a name that is not a registered analyzer.
    """
    from audit.analyzers.base import ANALYZERS
    from audit.analyzers.builtin import MODEL_ANALYZERS

    chosen = tuple(names) if names else MODEL_ANALYZERS
    specs = []
    for n in chosen:
        takes = accepts_keyword(ANALYZERS.factory(n), "n_prompts")
        specs.append(AnalyzerSpec.of(n, n_prompts=n_prompts) if takes and n_prompts is not None else AnalyzerSpec.of(n))
    return tuple(specs)


def accepts_keyword(factory: Callable, name: str) -> bool:
    """Whether ``factory`` takes the keyword argument ``name``: named in its signature, or passed on
    by ``**kwargs`` to a base class's ``__init__`` that names it (a probe that adds its own arguments
    and forwards the rest, such as ``triggered_compliance``).

    Args:
        factory: a class (its ``__init__`` and those of its bases, in method resolution order, are
            read while each forwards ``**kwargs``) or a function.
        name: the keyword.

    Returns:
        ``True`` when a call ``factory(name=...)`` reaches a parameter of that name.

    Raises:
        ValueError, TypeError: ``inspect.signature`` cannot read a signature (a builtin).
    """
    import inspect

    for f in (inspect.getmro(factory) if inspect.isclass(factory) else (factory,)):
        if f is object:
            return False
        params = inspect.signature(f.__init__ if inspect.isclass(f) else f).parameters
        if name in params:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return False
    return False
