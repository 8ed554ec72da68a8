"""Tensor names of a saved PEFT LoRA adapter, paired into modules.

peft saves ``base_model.model.<module>.lora_A.weight`` / ``.lora_B.weight`` for linear and
convolution layers, ``<module>.lora_embedding_A`` / ``_B`` for embeddings and
``<module>.lora_magnitude_vector`` for DoRA. In the wild the adapter name may remain
(``lora_A.default.weight``) and the ``base_model.model.`` prefix may be doubled (an adapter saved
from an already-wrapped model: peft would not find those modules at load time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

PREFIX = "base_model.model."

_KEY = re.compile(
    r"^(?P<module>.+?)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)"
    r"(?:\.(?P<adapter>(?!weight$)[^.]+))?(?:\.weight)?$"
)

Role = Literal["A", "B", "magnitude"]


@dataclass(frozen=True)
class TensorKey:
    """One LoRA tensor name, decoded."""

    name: str
    """The full tensor name in the file."""
    module: str
    """Module path in the base model (every leading ``base_model.model.`` removed)."""
    role: Role
    embedding: bool
    """True for ``lora_embedding_A``/``_B`` (stored transposed with respect to ``B·A``)."""
    adapter_name: str | None
    prefix_count: int
    """How many ``base_model.model.`` prefixes the name carried (peft writes exactly one)."""


def strip_prefix(name: str) -> tuple[str, int]:
    """Remove every leading ``base_model.model.``; returns the rest and how many were removed."""
    n = 0
    while name.startswith(PREFIX):
        name = name[len(PREFIX):]
        n += 1
    return name, n


def parse_key(name: str) -> TensorKey | None:
    """Decode a LoRA tensor name, or ``None`` when the name is not a LoRA factor or magnitude."""
    m = _KEY.match(name)
    if m is None:
        return None
    module, n = strip_prefix(m.group("module"))
    part = m.group("part")
    role: Role = "magnitude" if part == "lora_magnitude_vector" else ("A" if part.endswith("A") else "B")
    return TensorKey(name=name, module=module, role=role, embedding="embedding" in part,
                     adapter_name=m.group("adapter"), prefix_count=n)


def module_layer(module: str) -> int | None:
    """Index of the block a module belongs to: the first all-digit path component, else ``None``."""
    for part in module.split("."):
        if part.isdigit():
            return int(part)
    return None


def module_block(module: str) -> str | None:
    """The stack a module's layer index counts in: the path before its first all-digit component
    (``model.layers``, ``model.encoder.layers``, ``decoder.block``, ``down_blocks``, ``up_blocks``,
    ``mid_block.attentions``), else ``None``. Encoder layer 3 and decoder layer 3 of an
    encoder-decoder model, or a UNet's ``down_blocks.1`` and ``up_blocks.1``, share an index but
    not a block."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[:i]) or None
    return None


CONV1D_TYPES = frozenset({"c_attn", "c_proj", "c_fc"})
"""Module names of GPT-2's ``Conv1D`` layers, which store the weight as ``[in, out]``."""
_CONV1D_BASES = re.compile(r"gpt-?2|dialogpt|distilgpt", re.IGNORECASE)
_LINEAR_C_ATTN_BASES = re.compile(r"qwen|bigcode|starcoder|santacoder", re.IGNORECASE)


def conv1d_orientation(module_type: str, base_model: str | None) -> Literal["conv1d", "linear", "assumed"] | None:
    """Whether a ``c_attn``/``c_proj``/``c_fc`` module is a GPT-2 ``Conv1D`` (peft then treats it as
    ``fan_in_fan_out`` whatever the config says, and warns): ``conv1d`` for a GPT-2 family base,
    ``linear`` for the families whose layers of these names are ``nn.Linear`` (Qwen v1, GPT-BigCode),
    ``assumed`` (``Conv1D``) when the base model does not say; ``None`` for other module names."""
    if module_type not in CONV1D_TYPES:
        return None
    if base_model and _CONV1D_BASES.search(base_model):
        return "conv1d"
    if base_model and _LINEAR_C_ATTN_BASES.search(base_model):
        return "linear"
    return "assumed"


def module_type(module: str) -> str:
    """The module's own name: its last path component (``q_proj``, ``c_attn``, ``query``...)."""
    return module.rsplit(".", 1)[-1]


@dataclass
class ModuleKeys:
    """The tensor names of one LoRA module."""

    module: str
    a: TensorKey | None = None
    b: TensorKey | None = None
    magnitude: TensorKey | None = None
    duplicates: list[str] = field(default_factory=list)

    @property
    def embedding(self) -> bool:
        return any(k is not None and k.embedding for k in (self.a, self.b))

    @property
    def complete(self) -> bool:
        return self.a is not None and self.b is not None


@dataclass
class KeyPlan:
    """All tensor names of a file, sorted into LoRA modules and the rest."""

    modules: dict[str, ModuleKeys]
    other: list[str]
    """Names that are not LoRA tensors (``modules_to_save`` heads, prompt embeddings...)."""
    max_prefix_count: int


def plan_modules(names: list[str]) -> KeyPlan:
    """Pair LoRA tensor names into modules, in file order of first appearance.

    A module with two tensors for the same role (e.g. two adapter names) keeps the first and
    lists the rest in ``duplicates``.
    """
    modules: dict[str, ModuleKeys] = {}
    other: list[str] = []
    max_prefix = 0
    for name in names:
        key = parse_key(name)
        if key is None:
            other.append(name)
            continue
        max_prefix = max(max_prefix, key.prefix_count)
        mk = modules.setdefault(key.module, ModuleKeys(module=key.module))
        slot = {"A": "a", "B": "b", "magnitude": "magnitude"}[key.role]
        if getattr(mk, slot) is None:
            setattr(mk, slot, key)
        else:
            mk.duplicates.append(name)
    return KeyPlan(modules=modules, other=other, max_prefix_count=max_prefix)
