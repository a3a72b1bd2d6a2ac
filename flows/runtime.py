"""Prefect settings the flows need on this kind of machine (docs/flows.md, PERF-NOTES).

Import this module before (or instead of) ``prefect`` in anything that runs or serves flows:

- ``PREFECT_SERVER_ANALYTICS_ENABLED=false`` unless set otherwise — analytics on the embedded
  server cause "database is locked" noise; it must be in the environment before Prefect
  reads its settings (and before any ephemeral server subprocess starts).
- the flow-run heartbeat off: a sync flow otherwise waits ~1 s at its end for the heartbeat
  thread. ``flows.heartbeat_frequency`` cannot be switched off from the environment (the
  setting has a minimum of 30 s), so it is set to None in code — on the process-wide
  settings, which every later ``temporary_settings`` copy inherits. A served flow run imports
  its flow's module in its own process, so this runs there too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

__all__ = ["quiet_prefect", "call", "logger"]

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def quiet_prefect() -> None:
    """Switch the heartbeat (and, if Prefect was imported first, analytics) off in code."""
    import prefect.context
    from prefect.settings import get_current_settings

    targets = {id(s): s for s in (prefect.context.GLOBAL_SETTINGS_CONTEXT.settings,
                                  get_current_settings())}
    for settings in targets.values():
        settings.flows.heartbeat_frequency = None
        if os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"].lower() == "false":
            settings.server.analytics_enabled = False


def _in_flow_run() -> bool:
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


def call(task: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a task as a task inside a flow run, and as the plain function outside one — so a
    flow's ``.fn`` runs with no Prefect server at all (tests, ``--plain``)."""
    fn: Callable[..., Any] = task if _in_flow_run() else task.fn
    return fn(*args, **kwargs)


def logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run logger inside a flow run, the ``pledgeflow.flows`` logger outside one."""
    if _in_flow_run():
        from prefect import get_run_logger

        return get_run_logger()  # type: ignore[return-value]
    return logging.getLogger("pledgeflow.flows")


quiet_prefect()
