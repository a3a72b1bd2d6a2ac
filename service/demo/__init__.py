"""``pledgeflow demo``: the seed's whole campaign replayed on the embedded defaults, fast.

A fresh SQLite database under ``var/demo/`` (wiped first), migrated and seeded with the
notice's data and the demo people; the real app (``create_app``, with its outbox dispatcher)
under uvicorn on a free loopback port, in a process of its own (``service_process``: the
service gets a core to itself); the local mail catcher on a free port as its SMTP server; and
one ``SharedClock`` (a small file) read by the service and its dispatcher, which this module
steps through each period's calendar.

Between the clock's steps **people act through the JSON API** with their own bearer tokens
(httpx, a small thread pool): units and members draft and submit pledges (most on time, some
late — they get reminders and their superiors escalations), superiors approve (about one in
seven goes back once), a member of the public objects to a pledge on the bulletin and the
office upholds it, leaders review, subjects acknowledge and record fulfilment, evaluators vote
(some rounds stay below quorum), and the campaign office decides the commendations within the
quota. **The real flows drive the calendar** (``drive_period``, ``send_reminders``,
``roll_over_period``) with a flow service token, exactly as the schedule would run them.

How the flows are called: as plain functions (``flow.fn``, the same code path as
``pledgeflow flows run … --plain``); with ``prefect=True`` (``pledgeflow demo --prefect``) they
run as Prefect flow runs on Prefect's ephemeral server instead. Not measured here yet:
docs/flows.md gives 8–23 s for the ephemeral server's cold start plus per-run bookkeeping, over
the ~60 flow runs of a full replay, so ``.fn`` is the default (``DEMO_FLOW_MODE``).

Who does what varies by case id, deterministically (``_pick``), so runs are repeatable.
"""

from service.demo.report import DemoReport, PeriodReport
from service.demo.run import DEMO_FLOW_MODE, FLOW_NAME, free_port, run_demo, serving

__all__ = ["run_demo", "DemoReport", "PeriodReport", "serving", "free_port", "FLOW_NAME",
           "DEMO_FLOW_MODE"]
