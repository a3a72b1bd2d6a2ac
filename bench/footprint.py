"""Footprint: the service's RSS after warm-up, and ``pledgeflow up`` from launch to ready,
each beside a baseline measured in the same run.

    .venv/bin/python -m bench.footprint [--requests 3000]

RSS: ``pledgeflow serve`` (uvicorn, uvloop + httptools) with 1 and 2 workers on a fresh
SQLite database in a temp dir (migrated, seeded with ``--demo``, first period open), warmed
with a few thousand mixed GETs (pages, API with a bearer token, health); the figure is the sum
of VmRSS over the process tree (/proc). Baseline: a bare FastAPI hello-world app started with
the same uvicorn options and warmed with as many requests.

Ready: ``pledgeflow up --no-flows`` (what ``make run`` runs, without the Prefect child, which is
started only *after* the ready line anyway) in a fresh temp directory, from launch to its
"ready" line. Baselines: ``python -c "import prefect"`` and the bare app's launch to listening.
Every process is started in its own session and its group is killed on the way out.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.decisions import _free_port

BIN = Path(sys.executable).parent
BARE_APP = '''from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def hello() -> dict:
    return {"hello": "world"}
'''
PAGES = ("/", "/login", "/bulletin", "/api/v1/bulletin", "/api/v1/inbox", "/api/v1/cases",
         "/healthz", "/api/v1/cases?limit=100")


def clean_env(workdir: Path, **extra: str) -> dict[str, str]:
    """The environment without the caller's PLEDGEFLOW_* settings, pointed at ``workdir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEFLOW_")}
    env.update(PLEDGEFLOW_DATABASE_URL=f"sqlite:///{workdir}/pledgeflow.db",
               PLEDGEFLOW_DISPATCHER="false", PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)
    return env


@contextmanager
def started(cmd: list[str], env: dict[str, str], cwd: Path,
            stdout: int = subprocess.DEVNULL) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in its own process group; kill the whole group on the way out."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=stdout, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        yield proc
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                continue
        if proc.stdout is not None:
            proc.stdout.close()


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> float:
    """Seconds until ``port`` accepts connections (raises if the process dies first)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return time.perf_counter() - t0
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"port {port} not listening after {timeout} s")


def tree_rss_mb(pid: int) -> float:
    """Sum of VmRSS (MB) of ``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def warm(port: int, paths: tuple[str, ...], n: int, token: str | None) -> int:
    """``n`` GETs cycling over ``paths``; returns how many got a 4xx or 5xx."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    bad = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as c:
        for i in range(n):
            bad += c.get(paths[i % len(paths)]).status_code >= 400
    return bad


def prepare_sqlite(workdir: Path) -> str:
    """Migrate and seed (demo) a SQLite database; open the first period; a bearer token."""
    env = clean_env(workdir)
    cli = str(BIN / "pledgeflow")
    for args in (["db", "upgrade"], ["seed", "--demo"], ["period", "open", "2010"]):
        subprocess.run([cli, *args], env=env, cwd=workdir, check=True, capture_output=True)
    return subprocess.run([cli, "tokens", "create", "--name", "bench", "--username",
                           "office.admin"], env=env, cwd=workdir, check=True,
                          capture_output=True, text=True).stdout.strip().splitlines()[-1]


def rss_runs(workdir: Path, token: str, requests: int) -> list[tuple[str, int, float, float, int]]:
    """(what, workers, start s, RSS MB after warm-up, errors) for the service and the bare app."""
    (workdir / "bare_app.py").write_text(BARE_APP)
    rows = []
    for workers in (1, 2):
        for what in ("pledgeflow serve", "bare FastAPI app"):
            port = _free_port()
            if what == "pledgeflow serve":
                cmd = [str(BIN / "pledgeflow"), "serve", "--port", str(port),
                       "--workers", str(workers)]
                paths, tok = PAGES, token
            else:
                cmd = [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port),
                       "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
                       "--no-access-log"]
                paths, tok = ("/",), None
            with started(cmd, clean_env(workdir), workdir) as proc:
                start = wait_listening(port, proc)
                bad = warm(port, paths, requests, tok)
                time.sleep(0.5)
                rows.append((what, workers, start, tree_rss_mb(proc.pid), bad))
    return rows


def time_up(root: Path) -> tuple[float, float]:
    """(launch to "ready" line s, the time ``up`` reports itself) in a fresh directory."""
    workdir = Path(tempfile.mkdtemp(dir=root))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEDGEFLOW_")}
    port, smtp = _free_port(), _free_port()
    t0 = time.perf_counter()
    with started([str(BIN / "pledgeflow"), "up", "--port", str(port), "--smtp-port", str(smtp),
                  "--no-flows"], env, workdir, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            if "ready in" in line:
                wall = time.perf_counter() - t0
                return wall, float(line.split("ready in", 1)[1].split("s")[0])
        raise RuntimeError(f"pledgeflow up exited ({proc.wait()}) without a ready line")


def main() -> None:
    """Measure and print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--ups", type=int, default=3, help="how many `up` launches to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pledgeflow_footprint_") as tmp:
        root = Path(tmp)
        db_dir = root / "serve"
        db_dir.mkdir()
        token = prepare_sqlite(db_dir)
        rows = rss_runs(db_dir, token, args.requests)
        ups = [time_up(root) for _ in range(args.ups)]
        imports = []
        for _ in range(args.ups):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import prefect"], check=True,
                           env=clean_env(root))
            imports.append(time.perf_counter() - t0)
    load = os.getloadavg()
    print(f"Footprint (uvicorn, uvloop + httptools; SQLite in a temp dir); load average "
          f"{load[0]:.2f} {load[1]:.2f}")
    print(f"{'process':<18} {'workers':>7} | {'start s':>7} {'RSS MB':>7} {'errors':>7}")
    for what, workers, start, rss, bad in rows:
        print(f"{what:<18} {workers:>7} | {start:>7.2f} {rss:>7.0f} {bad:>7}")
    bare_start = min(r[2] for r in rows if r[0] != "pledgeflow serve")
    print(f"\n`pledgeflow up --no-flows`, fresh directory, launch to ready line: "
          f"{', '.join(f'{w:.2f}' for w, _ in ups)} s (self-reported "
          f"{', '.join(f'{s:.2f}' for _, s in ups)} s)")
    print(f"baselines: python -c 'import prefect' {', '.join(f'{t:.2f}' for t in imports)} s; "
          f"bare app launch to listening {bare_start:.2f} s")
    worst_rss = next(r[3] for r in rows if r[0] == "pledgeflow serve" and r[1] == 1)
    worst_up = max(w for w, _ in ups)
    print(f"\ntargets: RSS (1 worker, whole tree) <= 200 MB -> {worst_rss:.0f} MB: "
          f"{'MET' if worst_rss <= 200 else 'NOT MET'}; ready <= 15 s -> {worst_up:.1f} s: "
          f"{'MET' if worst_up <= 15 else 'NOT MET'}")


if __name__ == "__main__":
    main()
