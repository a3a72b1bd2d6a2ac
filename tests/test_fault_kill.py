"""``kill -9`` of the service under load: nothing acknowledged is lost, the chain still verifies.

``pledgeflow serve`` runs as a real subprocess on PostgreSQL (a fresh ``pledgeflow_fault_…``
database at 127.0.0.1:5432) while four threads post approvals over HTTP. Mid-load the whole
process group gets SIGKILL — no shutdown code runs, transactions in flight die with their
connections — and the service is started again; the load carries on. Afterwards every approval
answered with a 2xx has its status and its event in the database, no case is approved twice,
and ``pledgeflow audit verify`` passes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import fault_support
from tests.fault_support import Load, Service, assert_acknowledged, audit_verify, prepare

pytestmark = pytest.mark.fault

CASES = 800
BEFORE_KILL = 150  # approvals acknowledged before the kill
AFTER_RESTART = 150  # and after the restart


pg_url = fault_support.pg_url


def test_kill_9_under_load_loses_no_acknowledged_decision(pg_url: str, tmp_path: Path) -> None:
    cases, token_of = prepare(pg_url, CASES)
    service = Service(pg_url, tmp_path)
    load = Load(service.base, cases, token_of, threads=4)
    try:
        service.start()
        load.start()
        assert load.wait_acked(BEFORE_KILL, timeout=120), \
            f"only {len(load.acked)} approvals before the kill: {load.statuses}"
        service.kill()  # mid-load: requests are in flight
        at_kill = len(load.acked)
        service.start()
        assert load.wait_acked(at_kill + AFTER_RESTART, timeout=120), \
            f"only {len(load.acked) - at_kill} approvals after the restart: {load.statuses}"
    finally:
        load.stop()
        service.stop()
    print(f"\nkill -9 under load: {len(load.acked)} acknowledged ({at_kill} before the kill), "
          f"answers {dict(load.statuses)}, {len(load.retried)} retried, "
          f"{len(load.conflicts_on_retry)} found already approved on retry")
    assert not load.unexpected, load.unexpected[:5]
    assert load.retried, "the kill interrupted no request: not a test of load"
    assert_acknowledged(pg_url, load.acked, load.conflicts_on_retry)
    print(audit_verify(pg_url))
