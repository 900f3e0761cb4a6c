"""Prefect orchestration of the pipeline stages: flows, tasks, caching, schedules, runners.

Only this package imports prefect. Tasks are thin wrappers over `pipeline` stage functions
and pass paths, never tables. Importing the package first turns Prefect's analytics off (before
prefect reads its settings: nothing leaves the machine), then ties Prefect's ephemeral API
server to this process so that no server outlives it (see flows/lifelines.py).
"""

import os

# No analytics from the server (its telemetry service also raced a run's first database
# writes: "database is locked" at start), none from the client. Children inherit them.
QUIET_PREFECT_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
os.environ.update(QUIET_PREFECT_ENV)
# Prefect waits 20 s for its ephemeral API; a busy 2-core machine needs longer on a first run.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from embedcurate.flows.lifelines import install_api_server  # noqa: E402

install_api_server()
