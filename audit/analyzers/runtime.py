"""What an actor of the analyzers that need the base model holds: base models loaded once, and
adapters swapped in and out of them (shared by the behaviour probes and the ``directions`` analyzer).

An adapter is read through the project's bounded safetensors reader (:class:`SafeWeights`: caps on
sizes and shapes, never a pickle), its config through peft's own config classes (remote code is
never trusted), and it is put into the loaded base with peft's multi-adapter API
(``PeftModel.add_adapter`` + ``set_peft_model_state_dict``; ``delete_adapter`` afterwards), so
one base in memory serves every adapter, and several adapters can answer in one mixed batch
(``adapter_names=``).

The **rank-1 variant** of an adapter replaces every ``ΔW = s·B·A`` by its top singular component
``σ₁u₁v₁ᵀ``, computed from the factors through the same exact QR route as the spectra
(:func:`audit.spectra.delta.delta_spectrum`), and loaded as a rank-1 LoRA (``r = 1``,
``lora_alpha = 1``, factors ``√σ₁·v₁ᵀ`` and ``√σ₁·u₁``).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.adapter.keys import parse_key
from audit.adapter.weights import SafeWeights, locate_weights, refuse_unreadable
from audit.analyzers.base import AnalyzerContext, Resources
from audit.errors import AdapterFormatError, BaseShapeMismatchError, UnsupportedAdapterError
from audit.limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:  # torch is imported where a model is loaded: the classes that use this stay light
    import torch

log = logging.getLogger(__name__)

CONFIG_NAME = "adapter_config.json"

MODEL_RESOURCES = Resources(num_cpus=1, num_gpus=1)
"""What an actor of the analyzers that need the base asks for: a GPU where the cluster has one
(else CPU threads, see :mod:`audit.pipeline.raypool`)."""

RUNTIME_KEY = "model_runtime"


def runtime_of(ctx: AnalyzerContext) -> ModelRuntime:
    """The actor's one :class:`ModelRuntime` (created on first use, kept in ``ctx.shared``)."""
    if RUNTIME_KEY not in ctx.shared:
        ctx.shared[RUNTIME_KEY] = ModelRuntime(device=ctx.device, limits=ctx.limits)
    return ctx.shared[RUNTIME_KEY]


@dataclass
class LoadedAdapter:
    """An adapter put into the runtime's model under ``name`` (and its rank-1 variant, if asked)."""

    name: str
    rank1: str | None
    n_modules: int


class ModelRuntime:
    """Base models kept in memory (one at a time; switching base reloads) and adapters swapped in.

    Args:
        device: ``cpu`` or ``cuda``.
        limits: caps on the adapter files read.
    """

    def __init__(self, device: str = "cpu", limits: Limits = DEFAULT_LIMITS) -> None:
        self.device, self.limits = device, limits
        self.base_revision: str | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self._n = 0

    def use_base(self, base) -> None:
        """Make ``base`` (a :class:`audit.models.base.LocalBaseModel`) the loaded model (no-op when it is)."""
        if self.base_revision == base.revision and self.model is not None:
            return
        from audit.models.generate import load_causal_lm

        self.model, self.tokenizer = None, None
        self.model, self.tokenizer = load_causal_lm(base.path, device=self.device)
        self.base_revision = base.revision

    def load(self, folder: Path, *, rank1: bool = False) -> LoadedAdapter:
        """Put the adapter in ``folder`` into the loaded base (and its rank-1 variant when asked).

        Raises:
            UnsupportedAdapterError: not a LoRA adapter.
            UnsafeFormatError: the weights are a pickle (never loaded).
            AdapterFormatError, LimitExceededError: malformed or oversized files.
            BaseShapeMismatchError: the tensors do not fit the base.
        """
        from peft.config import PeftConfig

        raw = _read_bounded(folder / CONFIG_NAME, self.limits.max_config_bytes)
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                config = PeftConfig.from_peft_type(**data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise AdapterFormatError(f"peft rejects the config: {exc}", code="config_invalid",
                                     file=CONFIG_NAME) from None
        if str(getattr(config.peft_type, "value", config.peft_type)) != "LORA":
            raise UnsupportedAdapterError(f"peft_type {config.peft_type} is not LoRA: no probe for it yet",
                                          code="probe_not_applicable", file=CONFIG_NAME)
        config.inference_mode = True
        loc = locate_weights(folder)
        if loc is None:
            raise AdapterFormatError("no weights file (adapter_model.safetensors)", code="weights_missing")
        refuse_unreadable(loc)
        import torch

        with SafeWeights(loc.path, self.limits) as weights:
            state = {n: weights.read(n).to(torch.float32) for n in weights.tensors if parse_key(n) is not None}
        if not state:
            raise AdapterFormatError("no LoRA tensors in the weights", code="no_lora_modules", file=loc.path.name)
        self._n += 1
        name = f"a{self._n}"
        self._inject(name, config, state, loc.path.name)
        loaded = LoadedAdapter(name=name, rank1=None, n_modules=sum(1 for n in state if ".lora_A" in n))
        if rank1:
            cfg1, state1 = rank1_variant(config, state)
            self._inject(f"{name}r1", cfg1, state1, loc.path.name)
            loaded.rank1 = f"{name}r1"
        return loaded

    def unload(self, loaded: LoadedAdapter) -> None:
        """Remove an adapter (and its rank-1 variant) from the model."""
        with warnings.catch_warnings():  # peft announces the new active adapter: noise here
            warnings.simplefilter("ignore")
            for name in (loaded.name, loaded.rank1):
                if name and name in getattr(self.model, "peft_config", {}):
                    self.model.delete_adapter(name)

    def _inject(self, name: str, config, state: dict[str, torch.Tensor], file: str) -> None:
        from peft import PeftModel, set_peft_model_state_dict

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if not isinstance(self.model, PeftModel):
                    self.model = PeftModel(self.model, config, adapter_name=name).eval()
                else:
                    self.model.add_adapter(name, config)
                result = set_peft_model_state_dict(self.model, state, adapter_name=name)
            except (RuntimeError, ValueError, KeyError, AttributeError, IndexError) as exc:
                if isinstance(self.model, PeftModel) and name in self.model.peft_config:
                    self.model.delete_adapter(name)
                raise BaseShapeMismatchError(f"the adapter does not fit the base model: {_short(exc)}",
                                             file=file) from None
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if unexpected and len(unexpected) >= len(state):
            self.model.delete_adapter(name)
            raise BaseShapeMismatchError(f"none of the adapter's {len(state)} tensors matches a module of the "
                                         f"base (e.g. {unexpected[0]})", file=file)
        if self.model.active_adapter not in self.model.peft_config:  # the active one was deleted
            self.model.set_adapter(name)
        self.model.to(self.device)
        self.model.eval()


def rank1_variant(config, state: dict[str, torch.Tensor]) -> tuple[Any, dict[str, torch.Tensor]]:
    """The rank-1 LoRA whose every module's delta is the top singular component of the original's.

    Args:
        config: the adapter's peft ``LoraConfig``.
        state: its tensors by saved name (``...lora_A.weight``: ``[r, d_in]``, ``...lora_B.weight``:
            ``[d_out, r]``, float32).

    Returns:
        ``(config, state)`` of the rank-1 adapter: ``r = 1``, ``lora_alpha = 1`` (scale 1), no
        rsLoRA, DoRA or per-module patterns; ``A₁ = √σ₁·v₁ᵀ`` ``[1, d_in]``, ``B₁ = √σ₁·u₁`` ``[d_out, 1]``.

    Raises:
        AdapterFormatError: factors that do not pair into products.
    """
    import torch

    import copy
    import math

    from audit.spectra.delta import as_matrix_factors, delta_spectrum

    cfg = copy.deepcopy(config)
    pairs: dict[str, dict[str, str]] = {}
    for n in state:
        key = parse_key(n)
        if key is not None and key.role in ("A", "B"):
            pairs.setdefault(key.module, {})[key.role] = n
    cfg.r, cfg.lora_alpha, cfg.use_rslora, cfg.use_dora = 1, 1, False, False
    cfg.rank_pattern, cfg.alpha_pattern = {}, {}
    out: dict[str, torch.Tensor] = {}
    for module, names in pairs.items():
        if set(names) != {"A", "B"}:
            continue
        a_name, b_name = names["A"], names["B"]
        a, b = state[a_name], state[b_name]
        a2, b2 = as_matrix_factors(a, b)
        scale = _scale(config, module, a.shape[0])
        spec = delta_spectrum(a2, b2, scale, vectors=True)
        sigma = float(spec.singular_values[0]) if spec.singular_values.numel() else 0.0
        root = math.sqrt(max(sigma, 0.0))
        u1 = spec.left[:, 0] if spec.left is not None and spec.left.shape[1] else torch.zeros(b2.shape[0])
        v1 = spec.right[:, 0] if spec.right is not None and spec.right.shape[1] else torch.zeros(a2.shape[1])
        out[a_name] = (root * v1)[None, :].to(torch.float32).reshape(1, *a.shape[1:])
        out[b_name] = (root * u1)[:, None].to(torch.float32).reshape(b.shape[0], 1, *b.shape[2:])
    return cfg, out


def _scale(config, module: str, rank: int) -> float:
    """peft's scale for ``module``: ``alpha/r`` (``alpha/√r`` with rsLoRA) after the patterns."""
    from audit.adapter.config import AdapterConfig

    c = AdapterConfig(peft_type="LORA", r=config.r, lora_alpha=config.lora_alpha,
                      use_rslora=bool(config.use_rslora), rank_pattern=dict(config.rank_pattern or {}),
                      alpha_pattern=dict(config.alpha_pattern or {}))
    try:
        return c.scale_for(module)
    except AdapterFormatError:
        return 1.0 / max(1, rank)


def _read_bounded(path: Path, cap: int) -> bytes:
    from audit.errors import LimitExceededError

    if not path.is_file():
        raise AdapterFormatError("no adapter_config.json", code="config_missing", file=path.name)
    size = path.stat().st_size
    if size > cap:
        raise LimitExceededError(f"{size} bytes, cap is {cap}", file=path.name)
    with open(path, "rb") as fh:
        return fh.read(cap + 1)


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
