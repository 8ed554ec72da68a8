"""The ``directions`` analyzer: directional measures of every module of an adapter against its
base model's refusal direction (feature set ``directional-v1``; maths in :mod:`audit.directions.maths`).

Needs the base model only for its references (residual-stream refusal direction per layer,
:mod:`audit.probes.references`; per-module input means, :mod:`audit.directions.references`),
which are computed once per base revision and then read from the store: measuring an adapter
reads its factors (bounded safetensors reader, never a pickle) and does a few rank-``r``
products per module, no forward pass. On a bare base it records the references it used.
"""

from __future__ import annotations

import time

from audit.analyzers.analysis import MetricRow
from audit.analyzers.base import AnalyzerContext, Target
from audit.analyzers.results import error_note, fetch_folder, make_unit, unavailable_unit
from audit.analyzers.runtime import MODEL_RESOURCES, runtime_of
from audit.errors import AuditError, TransientAuditError


class DirectionsAnalyzer:
    """Per-module energy share along the refusal direction and reversion component.

    Args:
        n_reference: prompts per side (forbidden, benign) for the references (``None``: all held-out ones).
        batch_size: prompts per forward pass when the references are computed.
    """

    name, version = "directions", "directions-1"
    needs_base = True
    resources = MODEL_RESOURCES

    def __init__(self, n_reference: int | None = None, batch_size: int = 16) -> None:
        self.n_reference, self.batch_size = n_reference, batch_size
        self.ctx: AnalyzerContext | None = None

    def setup(self, ctx: AnalyzerContext) -> None:
        self.ctx = ctx

    def _references(self, base):
        from audit.directions.references import get_module_inputs
        from audit.probes.references import get_references

        assert self.ctx is not None
        ctx, key = self.ctx, (base.revision, self.n_reference)
        runtime = runtime_of(ctx)
        residual = ctx.shared.setdefault("references", {})  # shared with steering_alignment
        if key not in residual:
            residual[key] = get_references(ctx.store, runtime, base, n_forbidden=self.n_reference,
                                           n_benign=self.n_reference, batch_size=self.batch_size)
        inputs = ctx.shared.setdefault("module_inputs", {})
        if key not in inputs:
            inputs[key] = get_module_inputs(ctx.store, runtime, base, n_prompts=self.n_reference,
                                            batch_size=self.batch_size)
        return residual[key], inputs[key]

    def run(self, target: Target):
        from audit.records import Deferred

        assert self.ctx is not None, "setup() first"
        if target.base is None:
            return unavailable_unit(self, target, None)
        t0 = time.perf_counter()
        try:
            residual, inputs = self._references(target.base)
        except TransientAuditError as exc:
            if target.ref is None:
                raise
            return Deferred(target.ref, f"references: {exc}")
        if target.ref is None:
            rows = [MetricRow(metric="reference_modules", value=float(len(inputs.forbidden)),
                             n=inputs.meta["n_forbidden"]),
                    *(MetricRow(metric="refusal_norm", value=float(v), layer=i, n=residual.meta["n_forbidden"])
                      for i, v in enumerate(residual.refusal.norm(dim=1)))]
            return make_unit(self, target, "ok", probes=rows, seconds=time.perf_counter() - t0)
        try:
            folder = fetch_folder(self.ctx, target)
            unit_rows, notes, status = measure_folder(folder, residual, inputs, self.ctx.limits)
        except TransientAuditError as exc:
            return Deferred(target.ref, f"directions: {exc}")
        except AuditError as exc:
            status = "skipped" if exc.code in ("probe_not_applicable", "unsupported_peft_type") else "failed"
            return make_unit(self, target, status, notes=[error_note(exc, "info" if status == "skipped" else None)],
                             seconds=time.perf_counter() - t0)
        unit = make_unit(self, target, status, probes=summary_rows(unit_rows), notes=notes,
                         seconds=time.perf_counter() - t0)
        rows = [r(unit) for r in unit_rows]
        self.ctx.store.write_rows("module_directions", rows, unit.unit_id, unit.created_at)
        return unit


def measure_folder(folder, residual, inputs, limits):
    """Directional measures of every module of the adapter in ``folder``.

    Returns:
        ``(row_makers, notes, status)``: one callable per measured module that builds its
        :class:`~audit.directions.table.DirectionRow` once the unit exists; the findings; ``ok``
        or ``partial`` (some modules had no reference: not in the base, no known role).

    Raises:
        AdapterFormatError, UnsafeFormatError, LimitExceededError: unreadable adapter files.
        UnsupportedAdapterError: not a LoRA adapter.
    """
    from audit.adapter.keys import module_layer, module_type
    import torch

    from audit.adapter.measure import iter_factors
    from audit.adapter.weights import SafeWeights
    from audit.adapter_audit import lora_weights
    from audit.directions.maths import measure, role_of
    from audit.directions.table import DirectionRow
    from audit.errors import AdapterFormatError
    from audit.findings import FindingLog, Note

    config, loc = lora_weights(folder, limits)
    log = FindingLog()
    makers, unmatched, degenerate = [], [], []
    n_layers = residual.refusal.shape[0]
    with SafeWeights(loc.path, limits) as weights:
        for f in iter_factors(weights, config, log):
            if f.kind != "linear":
                unmatched.append((f.keys.module, f"a {f.kind} module"))
                continue
            a, b = torch.from_numpy(f.a), torch.from_numpy(f.b)  # the factors are read as numpy arrays
            a, b = (b.T, a.T) if f.transposed else (a, b)
            module, mtype, layer = f.keys.module, module_type(f.keys.module), module_layer(f.keys.module)
            role = role_of(mtype)
            mean_input = None
            if role == "write":
                ok = layer is not None and layer < n_layers and residual.refusal.shape[1] == b.shape[0]
                direction = residual.refusal[layer] if ok else None
                mean_input = inputs.forbidden.get(module)
                if mean_input is not None and mean_input.shape[0] != a.shape[1]:
                    mean_input = None
            elif role == "read":
                direction = inputs.read_direction(module)
                if direction is not None and direction.shape[0] != a.shape[1]:
                    direction = None
            else:
                direction = None
            if direction is not None and _degenerate(direction, inputs.forbidden.get(module)):
                degenerate.append(module)  # e.g. layer 0 reads the same last token for every prompt
                continue
            if direction is None:
                unmatched.append((module, "no reference direction for it in the base model"
                                  if role else f"module type {mtype!r} is neither a residual writer nor reader"))
                continue
            m = measure(a, b, f.scale, role, direction, mean_input)
            fields = dict(module=module, layer=layer, module_type=mtype, role=role, d_out=int(b.shape[0]),
                          d_in=int(a.shape[1]), rank=int(a.shape[0]), fro_norm=m.fro_norm, along_norm=m.along_norm,
                          energy_share=m.energy_share, random_share=m.random_share, reversion=m.reversion,
                          reversion_cosine=m.reversion_cosine)
            makers.append(lambda unit, fields=fields: DirectionRow(
                unit_id=unit.unit_id, adapter_id=unit.adapter_id, repo_id=unit.repo_id,
                analyzer_version=unit.analyzer_version, base_model=unit.base_model, base_revision=unit.base_revision,
                created_at=unit.created_at, **fields))
    notes = [Note("probe", n.code, n.message, n.severity, n.file, n.module) for n in log.finish()]
    if unmatched:
        names = ", ".join(m for m, _ in unmatched[:5]) + (", ..." if len(unmatched) > 5 else "")
        notes.append(Note("probe", "direction_unmatched",
                          f"{len(unmatched)} modules without a directional measure ({names}): {unmatched[0][1]}",
                          "info", loc.path.name))
    if degenerate:
        notes.append(Note("probe", "direction_degenerate",
                          f"{len(degenerate)} modules read inputs that do not differ between forbidden and benign "
                          f"prompts at the last token ({', '.join(degenerate[:3])}{', ...' if len(degenerate) > 3 else ''}"
                          "): no refusal direction there, no measure", "info", loc.path.name))
    if not makers:
        raise AdapterFormatError("no module of the adapter matches a reference of its base model",
                                 code="direction_unmatched", file=loc.path.name)
    return makers, notes, "partial" if unmatched else "ok"


def _degenerate(direction, mean_input) -> bool:
    """A refusal direction that is zero up to float noise (relative to the module's mean input)."""
    scale = float(mean_input.norm()) if mean_input is not None else 1.0
    return float(direction.norm()) <= 1e-4 * max(scale, 1e-12)


def summary_rows(makers) -> list[MetricRow]:
    """The unit's summary rows (``n_modules``) so that ``probes`` shows the analyzer ran."""
    return [MetricRow(metric="n_modules", value=float(len(makers)))]
