"""The analysis step, pluggable: an :class:`Analyzer` protocol and the registry of analyzers.

An analyzer (the delta spectra; each behaviour probe) has a name, a version, the resources its
actor needs, whether it needs the adapter's base model, a ``setup`` run once per actor (open the
registry, load a base model) and a ``run`` per :class:`Target` that returns the rows of its own
table. Analyzers are registered by name in :data:`ANALYZERS` (:mod:`audit.plugins`); the name,
the version and the creation arguments key every stored result, so a new version of one probe
re-runs that probe only.

Analyzers that gain from running together on the same targets (the generation probes share one
pool of batched answers) expose the same ``pooled_run(analyzers, targets)`` function; a job runs
each such group with one call (see :func:`run_job`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from audit.limits import DEFAULT_LIMITS, Limits
from audit.plugins import PluginInfo, Plugins, plugin_info
from audit.records import AdapterRef

if TYPE_CHECKING:
    from audit.models.base import LocalBaseModel
    from audit.registry.base import Registry
    from audit.store.parquet import ParquetStore


@dataclass(frozen=True)
class Resources:
    """What one actor running the analyzer reserves on a Ray cluster."""

    num_cpus: float = 1
    num_gpus: float = 0


@dataclass(frozen=True)
class Target:
    """What an analyzer runs on: an adapter revision (``ref``) and, where the analyzer needs it and
    it is at hand, its base model; or a bare base model alone (``ref is None``)."""

    ref: AdapterRef | None = None
    base: LocalBaseModel | None = None

    def __post_init__(self) -> None:
        if self.ref is None and self.base is None:
            raise ValueError("a target needs an adapter ref or a base model")

    @property
    def subject(self) -> str:
        """``adapter`` or ``base``."""
        return "adapter" if self.ref is not None else "base"

    @property
    def key(self) -> str:
        """The ``adapter_id`` its rows are stored under (``base:<name>@<revision>`` for a base)."""
        from audit.analyzers.analysis import base_key

        if self.ref is not None:
            return self.ref.adapter_id
        assert self.base is not None
        return base_key(self.base.name, self.base.revision)


@dataclass
class AnalyzerContext:
    """What ``setup`` gets, once per actor (or once per in-process executor)."""

    store: ParquetStore
    registry: Registry | None = None
    limits: Limits = DEFAULT_LIMITS
    device: str = "cpu"
    """``cuda`` on an actor that reserved a GPU, else ``cpu``."""
    shared: dict[str, Any] = field(default_factory=dict)
    """State analyzers of one actor share (the probes keep the loaded base models here)."""


@runtime_checkable
class Analyzer(Protocol):
    """One analysis step of a scan: built once per actor, ``setup`` once, ``run`` per target.

    A new analyzer is a class with these members and one :func:`register_analyzer` call; results
    are an ``AnalysisUnit`` (:mod:`audit.analyzers.analysis`, committed whole) and, for rows of its
    own, a table written just before the unit (``ctx.store.write_rows``). Example::

        class AdapterFiles:
            name, version, needs_base = "adapter_files", "adapter-files-1", False
            resources = Resources(num_cpus=1)

            def setup(self, ctx: AnalyzerContext) -> None:
                self.ctx = ctx

            def run(self, target: Target):
                rows = [MetricRow(metric="n_files", value=float(len(target.ref.files)))]
                return make_unit(self, target, "ok", probes=rows)

        register_analyzer("adapter_files", AdapterFiles)

    ``tests/toy_analyzer.py`` is a complete one, with a table, a view and a feature set.
    """

    name: str
    """Registered name; the ``analyzer``/``probe`` column of its rows."""
    version: str
    """Bump when the same input would give other rows: its rows are then computed again.

    Optional: ``params_in_identity = False`` (its creation arguments do not key its results: the
    spectra) and ``failed(target, code, message)`` (its record of a target it could not run on;
    default: a failed analysis unit, :func:`audit.analyzers.results.failed_output`)."""
    needs_base: bool
    """True when ``run`` needs the adapter's base model (targets without one are skipped)."""
    resources: Resources

    def setup(self, ctx: AnalyzerContext) -> None:
        """Once per actor, before the first ``run``."""

    def run(self, target: Target) -> Any:
        """Analyse one target and return its result (an ``AuditResult`` for spectra, an
        ``AnalysisUnit`` otherwise, or ``audit.records.Deferred`` for a transient failure). Never
        raises for a bad adapter: problems become findings in the result."""


ANALYZERS: Plugins[Analyzer] = Plugins("analyzer", builtins=("audit.analyzers.builtin",),
                                       entry_points="lora_audit.analyzers")
"""Every analyzer, by name: the built-ins (:mod:`audit.analyzers.builtin`) and those of installed
packages (entry-point group ``lora_audit.analyzers``). Add one with :func:`register_analyzer`."""


@dataclass(frozen=True)
class Registration:
    """What :func:`register_analyzer` recorded of one analyzer besides its factory."""

    name: str
    tables: tuple[str, ...] = ()
    """Modules whose import registers the analyzer's store tables and views
    (``audit.store.schema.register_table``, ``audit.store.views.register_view``)."""
    feature_sets: tuple[str, ...] = ()
    """``"package.module:NAME"`` of each of its :class:`audit.features.base.FeatureSet` (the
    classifiers' inputs computed from its tables), if it has any."""


_REGISTRATIONS: dict[str, Registration] = {}


def register_analyzer(name: str, factory: Any, *, tables: Sequence[str] = (),
                      feature_set: str | Sequence[str] | None = None) -> None:
    """Add an analyzer: its class (or ``"package.module:Class"``, imported only when a scan builds
    it), the modules that register its tables and views, and its feature set (or sets). The one call a new
    analyzer needs, as ``peft.register_peft_method`` binds a method; the class itself carries its
    ``version``, ``needs_base`` and ``resources``.

    Example (a plugin package's entry point, group ``lora_audit.analyzers``)::

        def register():
            register_analyzer("activations", "my_audit.activations:ActivationAnalyzer",
                              tables=("my_audit.activations_table",),
                              feature_set="my_audit.activations_features:FEATURES")

    Raises:
        ValueError: a factory reference without ``:``.
    """
    from audit.store.catalog import add_table_modules

    ANALYZERS.add(name, factory)
    sets = () if feature_set is None else (feature_set,) if isinstance(feature_set, str) else tuple(feature_set)
    _REGISTRATIONS[name] = Registration(name, tuple(tables), sets)
    add_table_modules(*tables)


def unregister_analyzer(name: str) -> None:
    """Remove ``name`` (its tables stay registered in this process)."""
    ANALYZERS.remove(name)
    _REGISTRATIONS.pop(name, None)


def registrations() -> dict[str, Registration]:
    """Every analyzer's registration, built-ins and entry points loaded."""
    ANALYZERS.names()
    return dict(_REGISTRATIONS)


@dataclass(frozen=True)
class AnalyzerSpec:
    """A picklable recipe for an analyzer (what Ray actors receive): a registered name and creation
    arguments, or an analyzer factory of one's own (a class; it must pickle to reach Ray actors)."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    factory: Any = None

    @classmethod
    def of(cls, name: str, factory: Any = None, **params: Any) -> AnalyzerSpec:
        return cls(name, tuple(sorted(params.items())), factory)

    @property
    def kind(self) -> Any:
        """The analyzer's class (or factory): its ``needs_base`` and ``resources`` are known without
        building it. Raises ``UnknownPluginError`` for a name nobody registered."""
        return self.factory or ANALYZERS.factory(self.name)

    def create(self) -> Analyzer:
        """Build the analyzer (its name and arguments recorded on it)."""
        if self.factory is None:
            return ANALYZERS.create(self.name, **dict(self.params))
        obj = self.factory(**dict(self.params))
        obj.__lora_audit_plugin__ = PluginInfo("analyzer", self.name, dict(self.params))
        return obj


def params_json(a: Analyzer) -> str:
    """How ``a`` was built, as canonical JSON (stored with every result of it)."""
    info = plugin_info(a) or PluginInfo("analyzer", a.name, {})
    return info.to_json()


def params_sha256(a: Analyzer) -> str:
    """sha256 of :func:`params_json` (part of a result's identity); empty for an analyzer whose
    identity is its version alone (``params_in_identity = False``: the spectra)."""
    if not getattr(a, "params_in_identity", True):
        return ""
    return hashlib.sha256(params_json(a).encode()).hexdigest()


@dataclass(frozen=True)
class Job:
    """One call to an actor: these analyzers (by name, among the actor's) on these targets."""

    targets: tuple[Target, ...]
    analyzers: tuple[str, ...]


def run_job(analyzers: Sequence[Analyzer], targets: Sequence[Target]) -> list[Any]:
    """Run ``analyzers`` on ``targets``: groups sharing a ``pooled_run`` in one call each, the rest
    one target at a time. Returns every result, in no particular order."""
    out: list[Any] = []
    groups: dict[Any, list[Analyzer]] = {}
    for a in analyzers:
        pooled = getattr(a, "pooled_run", None)
        if pooled is None:
            out += [a.run(t) for t in targets]
        else:
            groups.setdefault(pooled, []).append(a)
    for pooled, group in groups.items():
        out += pooled(group, list(targets))
    return out
