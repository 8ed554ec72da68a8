"""Model cards: the YAML front matter of a repository's ``README.md``.

The front matter gives ``tags``, ``base_model``, ``library_name`` and, for labelled adapters made
by ``lora-audit zoo build``, the ground truth under the public key ``lora_audit:`` (``method``,
``objective``, ``severity``, ``seed``, ``steps``, ``data_sha256``). The declared training method is
read from ``lora_audit.method`` first, then from well-known tags (trl writes ``sft``, ``dpo``...),
else ``unknown``.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from audit.errors import AdapterFormatError

_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when PyYAML was built with it (about 10x faster), else the pure-Python one."""

KNOWN_METHODS = ("sft", "dpo", "steering", "orpo", "kto", "ipo", "simpo", "ppo", "grpo", "rloo", "cpo")
"""Training methods recognised from tags; anything else is ``unknown`` unless the card declares it."""

_TAG_TO_METHOD = {m: m for m in KNOWN_METHODS} | {
    "caa": "steering", "activation-steering": "steering", "steering-vector": "steering",
    "repe": "steering", "representation-engineering": "steering",
}
# When a card carries several method tags, the later training stage names the adapter.
_STAGE_ORDER = ("sft", "steering", "dpo", "ipo", "simpo", "orpo", "kto", "cpo", "ppo", "rloo", "grpo")


class ModelCard(BaseModel):
    """What lora-audit reads from a model card. Empty fields when there is no card."""

    model_config = ConfigDict(frozen=True)

    tags: tuple[str, ...] = ()
    base_model: str | None = None
    library_name: str | None = None
    method: str = "unknown"
    method_source: str = "none"
    """``card:lora_audit``, ``card:tags`` or ``none``."""
    labels: dict[str, Any] | None = None
    """The ``lora_audit:`` mapping, verbatim."""
    problems: tuple[str, ...] = ()
    """What was ignored as malformed (non-string tags, a base model that is not a name): the card is
    still used, and the audit records a ``card_invalid`` warning."""

    @property
    def labels_json(self) -> str | None:
        return None if self.labels is None else json.dumps(self.labels, sort_keys=True, default=str)


def front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a Markdown document (``---`` fenced at the top) as a dict.

    Raises:
        AdapterFormatError: code ``card_invalid`` when the YAML does not parse or is not a mapping.
    """
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    try:
        end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() in ("---", "..."))
    except StopIteration:
        raise AdapterFormatError("front matter is not closed by '---'", code="card_invalid",
                                 file="README.md") from None
    try:
        data = yaml.load("\n".join(lines[1:end]), Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise AdapterFormatError(f"front matter is not valid YAML: {' '.join(str(exc).split())}", code="card_invalid",
                                 file="README.md") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AdapterFormatError("front matter is not a mapping", code="card_invalid", file="README.md")
    if _expanded_size(data, MAX_NODES) > MAX_NODES:
        raise AdapterFormatError(f"front matter expands to more than {MAX_NODES} values (YAML aliases)",
                                 code="card_invalid", file="README.md")
    return data


MAX_NODES = 100_000
"""Most values a card's front matter may hold once YAML aliases are expanded: an alias bomb (a few
lines whose aliases expand to billions of values) is refused before anything walks it."""


def _expanded_size(value: Any, cap: int) -> int:
    """Number of values in ``value`` with shared references counted each time (stops past ``cap``)."""
    count, todo = 0, [value]
    while todo and count <= cap:
        item = todo.pop()
        count += 1
        if isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, (list, tuple)):
            todo.extend(item)
    return count


def parse_card(text: str) -> ModelCard:
    """Read a model card's metadata. See :func:`card_from_metadata`.

    Raises:
        AdapterFormatError: code ``card_invalid`` (see :func:`front_matter`).
    """
    return card_from_metadata(front_matter(text))


def card_from_metadata(meta: dict[str, Any]) -> ModelCard:
    """Build a :class:`ModelCard` from front-matter metadata (or a Hub API ``cardData``)."""
    raw_tags = meta.get("tags") or []
    if isinstance(raw_tags, str):
        raw_tags = [raw_tags]
    problems: list[str] = []
    if not isinstance(raw_tags, list):
        problems.append(f"tags is a {type(raw_tags).__name__}, not a list")
        raw_tags = []
    tags = tuple(t for t in raw_tags if isinstance(t, str))
    if len(tags) < len(raw_tags):
        problems.append(f"{len(raw_tags) - len(tags)} tags that are not strings ignored")
    base = meta.get("base_model")
    if isinstance(base, list):  # the Hub allows a list of base models: the first is the adapter's
        base = base[0] if base else None
    if base is not None and not isinstance(base, str):
        problems.append(f"base_model is a {type(base).__name__}, not a model name: ignored")
        base = None
    labels = meta.get("lora_audit") if isinstance(meta.get("lora_audit"), dict) else None
    method, source = "unknown", "none"
    if labels and isinstance(labels.get("method"), str) and labels["method"].strip():
        method, source = labels["method"].strip().lower(), "card:lora_audit"
    else:
        found = {_TAG_TO_METHOD[t.lower()] for t in tags if t.lower() in _TAG_TO_METHOD}
        if found:
            method = max(found, key=lambda m: _STAGE_ORDER.index(m) if m in _STAGE_ORDER else -1)
            source = "card:tags"
    library = meta.get("library_name")
    return ModelCard(tags=tags, base_model=str(base) if base else None,
                     library_name=str(library) if library else None,
                     method=method, method_source=source, labels=labels, problems=tuple(problems))
