"""Every process that serves the app freezes its startup heap, so full collections stay short."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_uvicorn_worker_entry_point_freezes_what_startup_built(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import gc, service.api.asgi; print(gc.get_freeze_count())"],
        cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin", "PLEDGEFLOW_DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
             "PLEDGEFLOW_DISPATCHER": "false"})
    # The imports, the app and its routes: far more than any one request leaves behind.
    assert int(out.stdout) > 50_000


def test_building_an_app_alone_freezes_nothing() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import gc; from service.api.app import create_app; create_app(); "
                               "print(gc.get_freeze_count())"],
        cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin", "PLEDGEFLOW_DATABASE_URL": "sqlite://",
             "PLEDGEFLOW_DISPATCHER": "false"})
    assert int(out.stdout) == 0
