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
