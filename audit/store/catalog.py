"""Which modules add tables and views to the store (bookkeeping only: nothing heavy is imported).

The store depends on none of the features that add tables. They register their table modules
here (an analyzer with ``register_analyzer(..., tables=)``), and before the store makes its
views it imports, by name, the providers of :data:`PROVIDERS`: ``"module"`` (its import registers
tables and views) or ``"module:function"`` (called: the analyzers' registrations, which load the
built-ins and every installed package's entry points, each adding its table modules here).
"""

from __future__ import annotations

import importlib

PROVIDERS = ("audit.analyzers.base:registrations", "audit.classify.tables", "audit.report.explain")
"""The project's own providers: every registered analyzer's tables, the verdicts', the report's."""

_MODULES: list[str] = []


def add_table_modules(*modules: str) -> None:
    """Record modules whose import registers tables (``audit.store.schema.register_table``) and
    views (``audit.store.views.register_view``); each is imported before the views are made."""
    _MODULES.extend(m for m in modules if m not in _MODULES)


def table_modules() -> tuple[str, ...]:
    """Import every provider and every recorded table module; returns the table modules in the
    order they were recorded.

    Raises:
        ImportError: a provider or a recorded module cannot be imported.
    """
    for provider in PROVIDERS:
        module, _, function = provider.partition(":")
        loaded = importlib.import_module(module)
        if function:
            getattr(loaded, function)()
    for module in tuple(_MODULES):
        importlib.import_module(module)
    return tuple(_MODULES)
