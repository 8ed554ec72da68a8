"""One registry helper for everything pluggable: analyzers, judges, label sources, training methods.

The pattern of inspect_ai's ``_util/registry.py``: a factory is registered under a name with a
decorator; :meth:`Plugins.create` builds an object from a name and keyword arguments and records
both on it (:func:`plugin_info`), so any stored result can say exactly what produced it and be
reproduced (``params`` columns hold :func:`plugin_info` as JSON). One lookup error,
:class:`UnknownPluginError`, lists the names that exist.

A factory may also be registered by reference, ``"package.module:Name"``, imported on first use
(a scan that runs the spectra alone never imports the probes' torch), and a kind may name an
``importlib.metadata`` entry-point group through which installed packages add plugins.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from importlib.metadata import entry_points
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from audit.errors import ConfigurationError

T = TypeVar("T")

_INFO_ATTR = "__lora_audit_plugin__"


class UnknownPluginError(ConfigurationError, KeyError):
    """No plugin of that kind has that name; the message lists the known names."""

    default_code = "unknown_plugin"

    def __str__(self) -> str:  # KeyError would quote the message
        return ConfigurationError.__str__(self)


@dataclass(frozen=True)
class PluginInfo:
    """What built an object: its kind, registered name and creation arguments."""

    kind: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """``{"kind", "name", "params"}`` as canonical JSON (sorted keys; non-JSON values as text)."""
        return json.dumps({"kind": self.kind, "name": self.name, "params": self.params}, sort_keys=True,
                          default=str)


class Plugins(Generic[T]):
    """The registry of one kind of plugin.

    Args:
        kind: what the plugins are, for messages (``analyzer``, ``judge``...).
        builtins: modules imported on first lookup, whose import registers the built-in plugins.
        entry_points: an ``importlib.metadata`` entry-point group (``lora_audit.analyzers``):
            after the built-ins, each installed entry point of the group is loaded once; loading
            it registers its plugins (an entry point that names a function is called).
    """

    def __init__(self, kind: str, builtins: tuple[str, ...] = (), entry_points: str | None = None) -> None:
        self.kind = kind
        self._builtins = builtins
        self._group = entry_points
        self._factories: dict[str, Callable[..., T] | str] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register ``factory`` (a class or a function returning the plugin) as ``name``."""

        def add(factory: Callable[..., T]) -> Callable[..., T]:
            self._factories[name] = factory
            return factory

        return add

    def add(self, name: str, factory: Callable[..., T] | str) -> None:
        """Register ``factory`` as ``name``: a class or function, or a ``"package.module:Name"``
        reference imported on first use."""
        if isinstance(factory, str) and ":" not in factory:
            raise ValueError(f"{self.kind} {name!r}: a factory reference is 'package.module:Name', got {factory!r}")
        self._factories[name] = factory

    def remove(self, name: str) -> None:
        """Forget ``name`` (a plugin package's tests, or a replaced built-in)."""
        self._factories.pop(name, None)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self._load_builtins()
        return sorted(self._factories)

    def factory(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name`` (a reference is imported now).

        Raises:
            UnknownPluginError: no such name (the message lists the known ones).
        """
        for module in self._builtins:  # in order, until one registers the name: a scan's spectra
            if name in self._factories:  # analyzer loads no probe module (nor torch)
                break
            importlib.import_module(module)
        if name not in self._factories:
            self._load_builtins()
        if name not in self._factories:
            raise UnknownPluginError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._factories))}")
        factory = self._factories[name]
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = self._factories[name] = getattr(importlib.import_module(module), attr)
        return factory

    def create(self, name: str, **params: Any) -> T:
        """Build the plugin ``name`` with ``params`` and record both on it (see :func:`plugin_info`).

        Raises:
            UnknownPluginError: no such name.
        """
        obj = self.factory(name)(**params)
        try:
            setattr(obj, _INFO_ATTR, PluginInfo(self.kind, name, dict(params)))
        except (AttributeError, TypeError):  # an object without a __dict__ (rare): unrecorded
            pass
        return obj

    def _load_builtins(self) -> None:
        for module in self._builtins:
            importlib.import_module(module)
        if self._group and not self._loaded:
            self._loaded = True
            for ep in entry_points(group=self._group):
                loaded = ep.load()
                if callable(loaded) and not isinstance(loaded, type):
                    loaded()


def plugin_info(obj: object) -> PluginInfo | None:
    """How ``obj`` was created by :meth:`Plugins.create`, or ``None`` when it was built otherwise."""
    return getattr(obj, _INFO_ATTR, None)
