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
