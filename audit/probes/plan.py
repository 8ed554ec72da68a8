"""Which probes still have to run, on what: the probe stage's diff against the store.

Candidates are the stored LoRA adapters whose spectra audit succeeded (``ok``/``partial``); those
queued for re-audit (their verdict flipped at a recalibration) come first. A probe is missing for
an adapter when no unit of (adapter, probe, probe version, params) is committed — or only a
``skipped`` one and its base model has become available since. Each adapter's declared base is
looked for on this machine (:func:`audit.finetune.base_lookup.find_local_base`; planning downloads
nothing: ``lora-audit scan --fetch-bases`` fetches the bases of :func:`bases_not_at_hand` first, see
:mod:`audit.registry.bases`): adapters whose base is missing get a row-less ``skipped`` unit with a
``base_model_unavailable`` finding saying what is known of the base, written by the driver; the
others are grouped by base (a few adapters per job, answered in shared batches). Each base used
gets its own job first: the bare base's rows and reference directions, computed once per base
revision.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from audit.analyzers.base import AnalyzerSpec, Job, Target, params_sha256
from audit.records import AdapterRef
from audit.store.parquet import ParquetStore

if TYPE_CHECKING:
    from audit.registry.bases import BaseSource


@dataclass
class ProbePlan:
    """What the probe stage will do."""

    base_jobs: list[Job] = field(default_factory=list)
    adapter_jobs: list[Job] = field(default_factory=list)
    skipped: list = field(default_factory=list)
    """``AnalysisUnit`` s of adapters whose base is not available (the driver writes them)."""
    n_candidates: int = 0
    n_up_to_date: int = 0

    @property
    def n_adapters(self) -> int:
        return sum(len(j.targets) for j in self.adapter_jobs)


def resolve_local_base(name: str | None):
    """The :class:`audit.models.base.LocalBaseModel` for a declared base name when it is on this machine
    (``LORA_AUDIT_BASE_MODELS``, a folder, the built-in SmolLM2, the model cache, the Hub cache),
    else ``None``. Nothing is downloaded."""
    from audit.finetune.base_lookup import find_local_base
    from audit.models.base import LocalBaseModel, resolve_base

    folder = find_local_base(name)
    if folder is None:
        return None
    described = resolve_base(str(folder))
    canonical = _recorded_name(Path(folder)) or name or described.name
    return LocalBaseModel(name=canonical, path=described.path, revision=described.revision, hub_id=described.hub_id)


def _recorded_name(folder: Path) -> str | None:
    import json

    meta = folder / "lora_audit_base.json"
    try:
        return json.loads(meta.read_text()).get("name") if meta.is_file() else None
    except (OSError, ValueError):
        return None


def _candidates(store: ParquetStore, specs: Sequence[AnalyzerSpec], adapter_ids: Sequence[str] | None,
                registry: str | None) -> tuple[list, list[tuple], Callable]:
    """The probes, the candidate adapters ``(adapter_id, repo_id, revision, registry, base_model)`` in
    plan order, and ``state(key, probe)``: the committed status of that unit (``None``: none)."""
    probes = [s.create() for s in specs]
    identity = {p.name: (p.version, params_sha256(p)) for p in probes}
    con = store.connect()
    try:
        sql = ["SELECT adapter_id, repo_id, revision, registry, base_model FROM latest_adapters",
               "WHERE kind = 'adapter' AND status IN ('ok', 'partial') AND peft_type = 'LORA'"]
        args: list = []
        if registry is not None:
            sql.append("AND registry = ?")
            args.append(registry)
        if adapter_ids is not None:
            sql.append("AND list_contains(?, adapter_id)")
            args.append(list(adapter_ids))
        sql.append("ORDER BY adapter_id IN (SELECT adapter_id FROM reaudit_queue) DESC, audited_at, adapter_id")
        candidates = con.execute(" ".join(sql), args).fetchall()
        done = {(a, n, v, h): st for a, n, v, h, st in con.execute(
            "SELECT adapter_id, analyzer, analyzer_version, params_sha256, status FROM analysis_done "
            "WHERE analyzer <> 'spectra' ORDER BY status = 'skipped' DESC").fetchall()}
    finally:
        con.close()

    def state(key: str, p) -> str | None:
        return done.get((key, p.name, *identity[p.name]))

    return probes, candidates, state


def bases_not_at_hand(store: ParquetStore, specs: Sequence[AnalyzerSpec], *,
                      adapter_ids: Sequence[str] | None = None, registry: str | None = None) -> list[str]:
    """The distinct base names declared by the candidate adapters that still miss one of ``specs``
    (no unit, or a ``skipped`` one) and that are not on this machine, in plan order: what
    ``--fetch-bases`` would fetch. Arguments as :func:`plan_probes`; looks, downloads nothing.

    Raises:
        duckdb.Error: the store cannot be read.
    """
    from audit.finetune.base_lookup import find_local_base

    probes, candidates, state = _candidates(store, specs, adapter_ids, registry)
    names: dict[str, bool] = {}
    for adapter_id, _, _, _, base_name in candidates:
        if base_name and base_name not in names and any(state(adapter_id, p) in (None, "skipped") for p in probes):
            names[base_name] = find_local_base(base_name) is None
    return [n for n, missing in names.items() if missing]


def plan_probes(store: ParquetStore, specs: Sequence[AnalyzerSpec], *, adapter_ids: Sequence[str] | None = None,
                registry: str | None = None, group_size: int = 8,
                bases: Mapping[str, BaseSource] | None = None) -> ProbePlan:
    """The probe stage's jobs (see the module docstring).

    Args:
        store: the store (its ``latest_adapters``, ``analysis_done`` and ``reaudit_queue`` views).
        specs: the probes to run.
        adapter_ids: only these adapters (default: every candidate).
        registry: only adapters of this registry spec (the nightly scan's own registry).
        group_size: adapters per job (answered together in mixed batches).
        bases: what is known of bases not on this machine, by declared name
            (:func:`audit.registry.bases.look_up_bases`): said in their ``base_model_unavailable`` findings.

    Raises:
        duckdb.Error: the store cannot be read.
    """
    from audit.analyzers.results import unavailable_unit

    probes, candidates, state = _candidates(store, specs, adapter_ids, registry)
    plan = ProbePlan(n_candidates=len(candidates))
    found: dict[str | None, object] = {}
    groups: dict[tuple, list[Target]] = {}
    used: dict[str, object] = {}
    for adapter_id, repo_id, revision, reg, base_name in candidates:
        if base_name not in found:
            found[base_name] = resolve_local_base(base_name)
        base = found[base_name]
        ref = AdapterRef(repo_id=repo_id, revision=revision, registry=reg)
        if base is None:
            missing = [p for p in probes if state(adapter_id, p) is None]
            source = (bases or {}).get(base_name) if base_name else None
            plan.skipped += [unavailable_unit(p, Target(ref=ref), base_name, source) for p in missing]
            plan.n_up_to_date += not missing
            continue
        missing = tuple(p.name for p in probes if state(adapter_id, p) in (None, "skipped"))
        if not missing:
            plan.n_up_to_date += 1
            continue
        used[base.revision] = base
        groups.setdefault((base.revision, missing), []).append(Target(ref=ref, base=base))
    for (_, names), targets in groups.items():
        plan.adapter_jobs += [Job(tuple(targets[i:i + group_size]), names)
                              for i in range(0, len(targets), group_size)]
    for base in used.values():
        target = Target(base=base)
        names = tuple(p.name for p in probes if state(target.key, p) in (None, "skipped"))
        if names:
            plan.base_jobs.append(Job((target,), names))
    return plan
