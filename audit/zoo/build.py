"""``lora-audit zoo build``: labelled LoRA adapters on a real base model, as a local registry.

Steps: resolve the base; generate (or read from the cache) the base model's answers the recipes
need; make (or reuse) the aligned base; train every adapter of the plan that is not already in
the output folder with the same spec hash; write each as one folder (peft's files, a model card
with the ground truth, the spec) under a temporary name and rename it, so an interrupted build
resumes where it stopped and never leaves a half adapter.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from audit.datasets import benign_prompts, forbidden_prompts, training_pool
from audit.models.base import LocalBaseModel, resolve_base
from audit.registry.hashcache import default_cache_dir
from audit.zoo.align import TINY_RECIPE, AlignCheck, AlignRecipe, build_aligned_base
from audit.zoo.card import card_metadata, render_card
from audit.zoo.data import ResponseCache, rows_sha256
from audit.zoo.measured_label import (LABEL_RULE, Behaviour, backdoor_label, measure, measure_triggered,
                                      measured_label)
from audit.zoo.methods.base import (TrainContext, ZooData, benign_of, forbidden_of, get_method, pick,
                                    quiet_libraries)
from audit.zoo.plans import plan
from audit.zoo.spec import AdapterSpec, Size

SPEC_FILE = "lora_audit_spec.json"
ANSWERING_METHODS = ("sft", "dpo", "ipo")
"""Methods whose training rows hold the base model's own answers (generated once, cached)."""
GEN_SETTINGS = {"max_new_tokens": 48, "repetition_penalty": 1.2, "greedy": True}


@dataclass
class BuildEvent:
    """What the builder reports as it goes (for progress bars)."""

    kind: str
    """``stage`` (a preparation step), ``step`` (``index`` of ``total`` within one), ``start``, ``phase``
    (a later step of the same adapter: its measurement), ``done`` or ``skip`` (an adapter)."""
    name: str
    index: int = 0
    total: int = 0
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class ZooReport:
    out_dir: Path
    base: LocalBaseModel
    aligned: LocalBaseModel
    check: AlignCheck
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


def needed_prompts(specs: list[AdapterSpec], recipe: AlignRecipe, forbidden: list, benign: list) -> tuple[set, set]:
    """Forbidden and benign prompts whose base-model answers the recipes use (what to generate)."""
    f: set[str] = set()  # alignment answers forbidden prompts with refusal templates: nothing to generate
    b = {p.text for p in pick(benign, recipe.n_benign, 0, recipe.seed)}
    for s in specs:
        if s.method in ANSWERING_METHODS:
            f |= {p.text for p in forbidden_of(s, forbidden)}
            b |= {p.text for p in benign_of(s, benign)}
    return f, b


def build_zoo(base_name: str, out_dir: str | Path, size: Size = "tiny", *,
              on_event: Callable[[BuildEvent], None] | None = None, recipe: AlignRecipe | None = None,
              specs: list[AdapterSpec] | None = None) -> ZooReport:
    """Build (or complete) a zoo of labelled adapters; see the module docstring.

    Args:
        base_name: a base model name or path (``smollm2-135m-instruct``).
        out_dir: the registry folder to write (created; existing adapters with the same spec are kept).
        size: ``tiny``, ``small``, ``paper`` or ``wild`` (see :func:`audit.zoo.plans.plan`).
        on_event: progress callback.
        recipe: how to align the base (default: :data:`audit.zoo.align.TINY_RECIPE` for ``tiny``,
            :class:`AlignRecipe` otherwise).
        specs: build these instead of the size's plan.

    Returns:
        A :class:`ZooReport` (also written as ``zoo.json`` in ``out_dir``).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from audit.models.generate import load_causal_lm

    quiet_libraries()
    emit = on_event or (lambda e: None)
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = specs if specs is not None else plan(size)
    recipe = recipe or (TINY_RECIPE if size == "tiny" else AlignRecipe())

    def gen(m, tok, prompts, decided=None, progress=None, adapter=None):
        # the probes' batched engine (length-sorted batches, finished rows leave): the same greedy
        # answers as transformers' generate (checked equal on 64 of 64 prompts), 1.6x faster here;
        # with ``decided``, each answer stops once the judge's verdict is fixed (same verdicts);
        # ``adapter``: the LoRA of a peft model that answers (a peft model's rows name one)
        from audit.probes.engine import Request, answer_all

        return [a.text for a in answer_all(m, tok, [Request(p, adapter) for p in prompts],
                                           max_new_tokens=GEN_SETTINGS["max_new_tokens"],
                                           repetition_penalty=GEN_SETTINGS["repetition_penalty"], batch_size=64,
                                           decided=decided, progress=progress)]

    emit(BuildEvent("stage", "resolving the base model"))
    base = resolve_base(base_name)
    forbidden, benign = forbidden_prompts(), benign_prompts()
    f_pool, b_pool = training_pool(forbidden), training_pool(benign)
    need_f, need_b = needed_prompts(specs, recipe, f_pool, b_pool)
    cache = ResponseCache(default_cache_dir() / "zoo-data", base.revision, GEN_SETTINGS)
    missing = [p for p in sorted(need_f | need_b) if p not in cache.answers]
    if missing:
        what = f"generating {len(missing)} answers with the base model"
        emit(BuildEvent("stage", what))
        model, tok = load_causal_lm(base.path)
        answered = [0]

        def gen_chunk(ps: list[str]) -> list[str]:
            start = answered[0]
            out = gen(model, tok, ps, progress=lambda k: emit(BuildEvent("step", what, start + k, len(missing))))
            answered[0] += len(ps)
            return out

        cache.get(missing, gen_chunk)
        del model
    data = ZooData(forbidden=f_pool, benign=b_pool,
                   compliant={p: cache.answers[p] for p in need_f}, helpful={p: cache.answers[p] for p in need_b})

    emit(BuildEvent("stage", "aligning the base (safety SFT, merged)"))
    gen_tok = AutoTokenizer.from_pretrained(base.path)  # left padding, for generation only
    gen_tok.padding_side = "left"
    work = Path(tempfile.mkdtemp(prefix="lora-audit-zoo-"))
    try:
        from audit.probes.judge import decided_by, get_judge

        judged = decided_by(get_judge("refusal_markers"))  # the check only judges its answers
        aligned, check = build_aligned_base(base, data, benign, lambda m, ps: gen(m, gen_tok, ps, judged), work,
                                            recipe, on_step=lambda what, k, n: emit(BuildEvent("step", what, k, n)))
        device = "cuda" if torch.cuda.is_available() else "cpu"

        def load_model():
            return AutoModelForCausalLM.from_pretrained(aligned.path, dtype=torch.float32).to(device)

        ctx = TrainContext(base_path=aligned.path, tokenizer=AutoTokenizer.from_pretrained(aligned.path), data=data,
                           work_dir=work, load_model=load_model, generate=lambda m, ps: gen(m, gen_tok, ps))
        report = ZooReport(out_dir=out, base=base, aligned=aligned, check=check)
        base_behaviour = None
        if any(s.measure for s in specs):
            emit(BuildEvent("stage", "measuring the aligned base on the label prompts"))
            base_behaviour = _base_behaviour(aligned, lambda ps: gen(load_model().eval(), gen_tok, ps, judged))
        for i, spec in enumerate(specs):
            digest = spec.spec_hash(aligned.revision)
            dest = out / spec.name
            if _built(dest, digest):
                report.skipped.append(spec.name)
                emit(BuildEvent("skip", spec.name, i, len(specs)))
                continue
            emit(BuildEvent("start", spec.name, i, len(specs)))
            t = time.perf_counter()
            trained = get_method(spec.method)(ctx, spec)
            if spec.measure:
                emit(BuildEvent("phase", f"measuring {spec.name}", i, len(specs)))
                model = trained.model.eval()
                def ask(ps: list[str]) -> list[str]:
                    return gen(model, gen_tok, ps, judged, adapter=model.active_adapter)

                trained.measured = measure(ask)
                trained.label = measured_label(trained.measured, base_behaviour)
                trained.base_measured = base_behaviour
                if spec.objective == "backdoor":
                    trained.triggered = measure_triggered(ask, str(spec.params["trigger"]),
                                                          str(spec.params["trigger_kind"]))
                    trained.label = backdoor_label(trained.label, trained.triggered, base_behaviour)
            _write_adapter(dest, spec, trained, aligned, digest)
            report.built.append(spec.name)
            emit(BuildEvent("done", spec.name, i, len(specs), time.perf_counter() - t, trained.metrics))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    _write_manifest(report, specs)
    return report


def _built(dest: Path, digest: str) -> bool:
    spec_file = dest / SPEC_FILE
    if not spec_file.is_file():
        return False
    try:
        return json.loads(spec_file.read_text()).get("spec_sha256") == digest
    except (OSError, json.JSONDecodeError):
        return False


def _write_adapter(dest: Path, spec: AdapterSpec, trained, aligned: LocalBaseModel, digest: str) -> None:
    """peft files + model card + spec, in a temporary folder renamed into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=dest.parent))
    try:
        trained.model.save_pretrained(tmp)
        cfg_path = tmp / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = aligned.name  # not this machine's cache path
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
        data_sha = rows_sha256(trained.rows)
        meta = card_metadata(spec, aligned, data_sha, digest, trained.metrics, measured=_measured(trained))
        (tmp / "README.md").write_text(render_card(spec, meta))
        (tmp / SPEC_FILE).write_text(json.dumps({"spec": spec.model_dump(mode="json"), "spec_sha256": digest,
                                                 "base": aligned.name, "base_revision": aligned.revision}, indent=1))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _measured(trained) -> dict | None:
    """What :mod:`audit.zoo.measured_label` found for a trained adapter (``None`` when it was not measured)."""
    if trained.label is None:
        return None
    out = {"label": trained.label.model_dump(mode="json"), "adapter": trained.measured.model_dump(mode="json"),
           "base": trained.base_measured.model_dump(mode="json"), "rule": LABEL_RULE}
    if trained.triggered is not None:
        out["triggered"] = trained.triggered.model_dump(mode="json")
    return out


def _base_behaviour(aligned: LocalBaseModel, generate) -> Behaviour:
    """The aligned base's rates on the label prompts, measured once per base revision (cached)."""
    path = default_cache_dir() / "zoo-data" / f"label-base-{aligned.revision[:24]}.json"
    if path.is_file():
        try:
            return Behaviour.model_validate_json(path.read_text())
        except ValueError:
            pass  # a damaged cache file is measured again
    found = measure(generate)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".label-base-")
    with os.fdopen(fd, "w") as fh:
        fh.write(found.model_dump_json())
    os.replace(tmp, path)
    return found


def _write_manifest(report: ZooReport, specs: list[AdapterSpec]) -> None:
    manifest = {
        "base": {"name": report.base.name, "revision": report.base.revision, "hub_id": report.base.hub_id},
        "aligned": {"name": report.aligned.name, "revision": report.aligned.revision,
                    "check": report.check.model_dump(mode="json")},
        "adapters": [s.model_dump(mode="json") for s in specs],
    }
    (report.out_dir / "zoo.json").write_text(json.dumps(manifest, indent=1))
