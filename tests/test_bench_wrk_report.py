"""The benchmarks read wrk's report: the figures they print come from the right lines."""

import pytest

from bench.decisions import parse_wrk

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
