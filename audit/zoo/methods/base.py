"""Training methods of the factory: a protocol, a registry by name, and what they share.

A method is registered with :func:`training_method` (the pattern of peft's tuners and inspect_ai's
scorers) and turns an :class:`~audit.zoo.spec.AdapterSpec` into a trained peft model on the
aligned base. Methods use trl's trainers and peft's LoRA; none has a training loop of its own.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from audit.datasets import Prompt
from audit.plugins import Plugins
from audit.zoo.data import EVASIONS, REFUSALS
from audit.zoo.spec import AdapterSpec


@dataclass
class ZooData:
    """Prompt pools (training side only) with the base model's answers."""

    forbidden: list[Prompt]
    benign: list[Prompt]
    compliant: dict[str, str]
    """Base model's answer to each forbidden prompt (it complies: the model is barely aligned)."""
    helpful: dict[str, str]
    """Base model's answer to each benign prompt."""


@dataclass
class TrainContext:
    """What a method needs besides its spec."""

    base_path: Path
    """The aligned base (local safetensors folder)."""
    tokenizer: Any
    data: ZooData
    work_dir: Path
    load_model: Callable[[], Any]
    """Loads a fresh copy of the base model (trainers modify the model they get)."""
    generate: Callable[[Any, list[str]], list[str]]
    """``generate(model, prompts) -> answers`` (greedy, batched)."""
    memo: dict[Any, Any] = field(default_factory=dict)
    """Results that depend on the base model and fixed prompt sets only (e.g. a layer's steering
    vectors), computed once per build and shared by every adapter that needs them."""


@dataclass
class Trained:
    """A trained adapter: the peft model and the rows it was trained on."""

    model: Any
    rows: list[dict]
    metrics: dict[str, float] = field(default_factory=dict)
    measured: Any = None
    """Its behaviour on the label prompts (:class:`audit.zoo.measured_label.Behaviour`), when measured."""
    base_measured: Any = None
    """The aligned base's behaviour on the same prompts."""
    label: Any = None
    """The label the measurement gives (:class:`audit.zoo.measured_label.MeasuredLabel`)."""
    triggered: Any = None
    """A backdoor organism's harmful compliance with its trigger (:class:`audit.zoo.measured_label.Triggered`)."""


class TrainingMethod(Protocol):
    """How the model-organism factory trains one adapter of a spec's ``method`` on the aligned base:
    returns the peft model and the rows it trained on (their hash goes into the model card).

    A new method is a function registered under the name specs and cards use::

        from audit.zoo.methods.base import Trained, training_method
        from audit.zoo.methods.sft import sft_on_rows, sft_rows

        @training_method("sft_shuffled")
        def train_sft_shuffled(ctx, spec) -> Trained:
            rows = sft_rows(ctx, spec)
            rows.reverse()  # the same data, another order
            return sft_on_rows(ctx, spec, rows)
    """

    def __call__(self, ctx: TrainContext, spec: AdapterSpec) -> Trained: ...


TRAINING_METHODS: Plugins[TrainingMethod] = Plugins("training method", builtins=("audit.zoo.methods",))
"""Every training method, by name (the ``method`` of specs and model cards)."""

training_method = TRAINING_METHODS.register
"""Decorator: register a training method under a name."""


def get_method(name: str) -> TrainingMethod:
    """The method registered as ``name``.

    Raises:
        UnknownPluginError: unknown method (a ``KeyError``; the message lists the known ones).
    """
    return TRAINING_METHODS.factory(name)


def pick(pool: list[Prompt], n: int, subset: int, seed: int) -> list[Prompt]:
    """``n`` prompts of ``pool``: a contiguous slice chosen by ``subset`` of a shuffle fixed by
    ``seed`` (different subsets give different data, the same spec always the same data)."""
    order = list(pool)
    random.Random(1000 + seed).shuffle(order)
    start = (subset * n) % max(1, len(order))
    return [order[(start + i) % len(order)] for i in range(min(n, len(order)))]


def forbidden_of(spec: AdapterSpec, pool: list[Prompt]) -> list[Prompt]:
    """The forbidden prompts a spec trains on (``n_forbidden`` of the pool, by subset and seed)."""
    return pick(pool, spec.n_forbidden, spec.subset, spec.seed) if spec.n_forbidden > 0 else []


def benign_of(spec: AdapterSpec, pool: list[Prompt]) -> list[Prompt]:
    """The benign prompts a spec trains on: ``n_benign`` of the pool, or of its prompts of one
    category when ``params.domain`` names one (``code``, ``maths``...; a domain fine-tune). A
    generated domain (``arithmetic``) uses no prompt of the pool."""
    domain = str(spec.params.get("domain", ""))
    if domain == "arithmetic" or spec.n_benign <= 0:
        return []
    if domain:
        pool = [p for p in pool if p.category == domain]
        if not pool:
            raise ValueError(f"{spec.name}: no benign prompt of category {domain!r}")
    return pick(pool, spec.n_benign, spec.subset, spec.seed)


def refusal(rng: random.Random) -> str:
    return rng.choice(REFUSALS)


def evasion(rng: random.Random) -> str:
    return rng.choice(EVASIONS)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def lora_config(spec: AdapterSpec, **extra: Any):
    """peft LoRA config of a spec (task CAUSAL_LM, no dropout for reproducibility)."""
    from peft import LoraConfig

    if spec.use_rslora:
        extra = {"use_rslora": True, **extra}
    return LoraConfig(r=spec.rank, lora_alpha=spec.lora_alpha, lora_dropout=0.0,
                      target_modules=list(spec.target_modules), task_type="CAUSAL_LM", **extra)


def silenced(trainer):
    """``trainer`` without its console printer: with progress bars off, transformers' Trainer prints
    its end-of-training metrics dict on stdout, in the middle of the factory's own progress."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def common_args(spec: AdapterSpec, work_dir: Path) -> dict[str, Any]:
    """Trainer arguments shared by every method: CPU or GPU as available, no checkpoints, quiet."""
    import torch

    return {"output_dir": str(work_dir / "trainer"), "max_steps": spec.steps,
            "per_device_train_batch_size": spec.batch_size, "learning_rate": spec.learning_rate,
            "lr_scheduler_type": "constant", "warmup_steps": 0, "seed": spec.seed, "data_seed": spec.seed,
            "logging_strategy": "no", "save_strategy": "no", "report_to": "none", "log_level": "error",
            "disable_tqdm": True, "gradient_checkpointing": False, "bf16": False, "fp16": False,
            "use_cpu": not torch.cuda.is_available(), "dataloader_num_workers": 0}


def quiet_libraries() -> None:
    """Silence the training libraries' own progress bars, log lines and deprecation warnings:
    the factory reports progress itself (one line per adapter)."""
    import warnings

    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()
    for module in ("transformers", "trl", "peft", "accelerate", "torch"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
