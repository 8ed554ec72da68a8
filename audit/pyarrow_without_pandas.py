"""pyarrow for the package, without the pandas import it would make on its first conversion.

pyarrow (26) checks whether each Python object it converts is a pandas object, and on the first
such check it imports pandas when pandas is installed (it is, for the zoo's trainers): 0.45-0.85 s
of a 4 s ad-hoc scan's CPU, for nothing (measured 2026-12-02, 3 fresh processes timing their first
``pa.array([0])``), since the package hands pyarrow only lists, dicts, scalars and numpy arrays.
Importing pyarrow through this module makes that first check while ``import pandas`` fails, so
pyarrow's shim records "no pandas" for its implicit checks. Explicit pandas use still works:
``Table.to_pandas`` and ``Table.from_pandas`` import pandas on demand (pyarrow retries its import
when a caller requires it), and a process that has already imported pandas is left alone.

Use ``from audit.pyarrow_without_pandas import pa`` wherever the package builds Arrow data from Python objects.
"""

from __future__ import annotations

import sys

import pyarrow as pa

__all__ = ["pa"]


class _NoPandas:
    """An import hook under which ``import pandas`` raises ImportError (for one call)."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("pandas is hidden from pyarrow's implicit check", name=name)


def _skip_implicit_pandas_import() -> None:
    if "pandas" in sys.modules:  # already paid for: pyarrow may as well recognise its objects
        return
    hook = _NoPandas()
    sys.meta_path.insert(0, hook)
    try:
        pa.array([0])  # pyarrow's pandas shim tries (and fails) its import here, once per process
    finally:
        sys.meta_path.remove(hook)


_skip_implicit_pandas_import()
