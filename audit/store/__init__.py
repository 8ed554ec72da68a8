"""The Parquet store and its DuckDB views."""

from audit.store.parquet import ParquetStore
from audit.store.views import connect, register_view

__all__ = ["ParquetStore", "connect", "register_view"]
