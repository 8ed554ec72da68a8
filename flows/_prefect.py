"""Prefect settings for the embedded default (Prefect's ephemeral API, no server to start).

Imported by every flow module before Prefect itself. Only defaults are set: a user's own
``PREFECT_*`` environment (``PREFECT_API_URL`` for a real server...) always wins.
"""

from __future__ import annotations

import os

# The ephemeral server's telemetry service races the server's own start-up writes on SQLite and
# prints a "database is locked" traceback at every start; it is noise for a batch job.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Flow runs of a CLI invocation should not try to reach Prefect Cloud.
os.environ.setdefault("PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY", "false")
# The ephemeral server starts in a subprocess (a uvicorn app and SQLite migrations); on a loaded
# 2-core machine that took longer than Prefect's default 20 s and failed the whole flow run.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
