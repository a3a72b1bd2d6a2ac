"""The benchmarks read wrk's report: the figures they print come from the right lines."""

import subprocess
import sys
import time

import pytest

from bench.decisions import cpu_seconds, parse_wrk

# A real report, whose "Req/Sec" line ends in "72.50%": an unanchored "50%" would read the
# word on the next line as the median.
REPORT = """\
Running 2s test @ http://127.0.0.1:55195
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.20ms    9.25ms  86.48ms   96.79%
    Req/Sec    90.65     19.41   110.00     72.50%
  Latency Distribution
     50%   10.46ms
     75%   11.18ms
     90%   12.60ms
     99%    1.02s
  181 requests in 2.00s, 51.51KB read
  Non-2xx or 3xx responses: 3
Requests/sec:     90.30
Transfer/sec:     25.70KB
"""


def test_the_percentiles_come_from_the_latency_distribution() -> None:
    result = parse_wrk(REPORT, 8)
    assert (result.clients, result.rps, result.p50_ms, result.p99_ms) == (8, 90.3, 10.46, 1020.0)
    assert (result.requests, result.errors) == (181, 3)


def test_a_report_without_its_distribution_is_refused() -> None:
    with pytest.raises(RuntimeError, match="no latency distribution"):
        parse_wrk(REPORT.split("  Latency Distribution")[0], 8)


def test_cpu_is_counted_for_the_process_group_or_the_database_asked_for() -> None:
    """``cpu_seconds`` (the CPU per decision beside the figures) reads /proc: a busy process
    group of its own shows its CPU; a database no backend serves counts 0."""
    busy = subprocess.Popen([sys.executable, "-c", "import time\nsum(i * i for i in "
                             "range(3_000_000))\ntime.sleep(60)"], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while cpu_seconds(pgid=busy.pid) < 0.05:
            assert time.monotonic() < deadline, "the busy child's CPU was never seen"
            time.sleep(0.05)
    finally:
        busy.kill()
        busy.wait()
    assert cpu_seconds(pgid=busy.pid) == 0  # gone: nothing left in its group
    assert cpu_seconds(database="no_database_is_named_like_this") == 0
