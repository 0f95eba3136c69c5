"""The benchmark harness's own logic on canned tool output: parsing hey and wrk, aggregating
rounds, and the PASS/MISS verdicts; and the warm-up sender against a small local server. No
load is measured and nothing is timed here."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from support.httpserver import serve_in_thread

from bench import data, loadgen, report

HEY_OK = """
Summary:
  Total:	10.0004 secs
  Slowest:	0.0129 secs
  Fastest:	0.0001 secs
  Average:	0.0005 secs
  Requests/sec:	713.5000

Latency distribution:
  10% in 0.0003 secs
  25% in 0.0004 secs
  50% in 0.0050 secs
  75% in 0.0060 secs
  90% in 0.0080 secs
  95% in 0.0090 secs
  99% in 0.0120 secs

Details (average, fastest, slowest):
  DNS+dialup:	0.0000 secs, 0.0001 secs, 0.0129 secs

Status code distribution:
  [200]	7135 responses
"""

HEY_FAILING = """
Summary:
  Total:	2.0000 secs
  Slowest:	0.9000 secs
  Requests/sec:	50.0000

Latency distribution:
  10% in 0.0100 secs
  50% in 0.0200 secs

Status code distribution:
  [200]	97 responses
  [503]	3 responses

Error distribution:
  [2]	Post "http://127.0.0.1:9/rag": dial tcp 127.0.0.1:9: connect: connection refused
"""

WRK_OK = """Running 1s test @ http://127.0.0.1:48111
  2 threads and 4 connections
Requests/sec:   9587.41
BENCH_JSON {"requests": 9592, "duration_us": 1000479, "bytes": 1314104, "non2xx": 4, "wrapped": 0, \
"errors": {"connect": 0, "read": 1, "write": 0, "status": 4, "timeout": 2}, "latency_us": {"mean": 435.8, \
"max": 4642, "p50": 396, "p90": 541, "p95": 622, "p99": 1630}, "stages_ms": {"search": {"n": 10, \
"p50": 0.5, "p95": 0.9, "p99": 1.2}, "embed": null, "rerank": null}}
"""


def test_parse_hey_counts_statuses_and_percentiles() -> None:
    r = loadgen.parse_hey(HEY_OK)
    assert r.requests == 7135 and r.non2xx == 0 and r.errors == 0
    assert r.rps == pytest.approx(7135 / 10.0004)
    assert (r.p50_ms, r.p95_ms, r.p99_ms) == pytest.approx((5.0, 9.0, 12.0))


def test_parse_hey_non2xx_errors_and_missing_percentiles() -> None:
    r = loadgen.parse_hey(HEY_FAILING)
    assert r.requests == 100 and r.non2xx == 3 and r.errors == 2
    assert r.status_counts == {"200": 97, "503": 3}
    assert "connection refused" in r.error_lines[0]
    # hey printed no 95%/99% lines: the slowest response stands in for them
    assert r.p50_ms == pytest.approx(20.0) and r.p99_ms == pytest.approx(900.0)


def test_hey_command_is_the_readme_hot_query() -> None:
    cmd = loadgen.hey_command("http://h:1/rag", 10)
    assert cmd[:2] == ["hey", "-z"] and cmd[2] == "10s"
    assert cmd[cmd.index("-c") + 1] == "20" and cmd[cmd.index("-m") + 1] == "POST"
    assert cmd[cmd.index("-d") + 1] == '{"q":"test","k":50}'
    assert cmd[cmd.index("-T") + 1] == "application/json"


def test_parse_wrk_summary_line() -> None:
    r = loadgen.parse_wrk(WRK_OK)
    assert r.requests == 9592 and r.non2xx == 4 and r.errors == 3  # read + timeout; status is non2xx
    assert r.rps == pytest.approx(9592 / 1.000479)
    assert (r.p50_ms, r.p95_ms, r.p99_ms) == pytest.approx((0.396, 0.622, 1.63))
    assert r.stages_ms == {"search": {"n": 10, "p50": 0.5, "p95": 0.9, "p99": 1.2}}
    with pytest.raises(ValueError, match="BENCH_JSON"):
        loadgen.parse_wrk("Running 1s test\n")


def _run(
    scenario: str, server: str, rps: float, p50: float = 10, p95: float = 20, p99: float = 25, **kw: Any
) -> Any:
    result = {
        "requests": int(rps * 10),
        "rps": rps,
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "non2xx": kw.get("non2xx", 0),
        "errors": 0,
        "cpu_s": 1.0,
        "rss_hwm_mb": kw.get("rss", 300.0),
        "stages_ms": {},
    }
    return {"scenario": scenario, "server": server, "round": 1, "result": result}


def _verdicts(runs: list[dict[str, Any]], sizes: list[int]) -> dict[str, report.Target]:
    targets = report.evaluate(report.aggregate(runs), sizes, 100000)
    return {t.name.split(" (")[0] if t.name.startswith("Peak") else t.name: t for t in targets}


def test_targets_pass_and_miss_on_the_ratios() -> None:
    runs = [
        _run("S1", report.GATEWAY, 500, p50=10, p99=25),
        _run("S1", report.FLOOR, 1000),
        _run("S1", report.NAIVE, 100),
        _run("S2", report.GATEWAY, 90, p95=100),
        _run("S2", report.NAIVE, 40, p95=300),
        _run("S4", report.s4_server(2000), 50, p50=10),
        _run("S4", report.s4_server(100000), 40, p50=25),
        _run("S5", report.GATEWAY, 500),
        _run("S5", report.TRACED, 460),
    ]
    v = _verdicts(runs, [2000, 20000, 100000])
    assert v["S1 RPS >= 40% of P0"].verdict == "PASS"  # 50%
    assert v["S1 RPS >= 3x P1"].verdict == "PASS"  # 5x
    assert v["S1 p99 <= 3x p50"].verdict == "PASS"  # 2.5x
    assert v["S2 RPS >= 2x P1 at equal or better p95"].verdict == "PASS"  # 2.25x, 100 <= 300 ms
    assert v["S4 /rag p50 at 100k <= 2x p50 at 2k"].verdict == "MISS"  # 2.5x
    assert v["S5 tracing costs <= 10% of S1 RPS"].verdict == "PASS"  # 8%
    assert v["Peak RSS of one gateway worker <= 400 MB"].verdict == "PASS"

    runs[0] = _run("S1", report.GATEWAY, 350, p50=10, p99=31)
    runs[3] = _run("S2", report.GATEWAY, 90, p95=301)
    v = _verdicts(runs, [2000, 20000, 100000])
    assert v["S1 RPS >= 40% of P0"].verdict == "MISS"  # 35%
    assert v["S1 p99 <= 3x p50"].verdict == "MISS"  # 3.1x
    assert v["S2 RPS >= 2x P1 at equal or better p95"].verdict == "MISS"  # p95 worse than P1
    runs[-1] = _run("S5", report.TRACED, 440)
    assert _verdicts(runs, [2000])["S5 tracing costs <= 10% of S1 RPS"].verdict == "MISS"  # 12%


def test_s2_cpu_per_request_is_held_to_the_models_own_cost_per_query() -> None:
    def s2(cpu_s: float, non2xx: int = 0) -> dict[str, Any]:
        run = _run("S2", report.GATEWAY, 100, non2xx=non2xx)
        run["result"]["cpu_s"] = cpu_s  # over 1,000 requests: cpu_s is ms per request
        return run

    model = {"batch": 16, "queries": 4800, "wall_s": 10.0, "qps": 480.0, "cpu_ms_per_query": 2.5}
    name = "S2 CPU per request <= 1.3x the model's own per query (batch 16)"

    def verdict(run: dict[str, Any], line: dict[str, Any] | None = model) -> report.Target | None:
        found = [t for t in report.evaluate(report.aggregate([run]), [2000], 100000, None, line)]
        return next((t for t in found if t.name == name), None)

    passing = verdict(s2(3.2))  # 1.28x
    assert passing is not None and passing.verdict == "PASS" and passing.measured.startswith("1.28x (3.20 vs")
    missing = verdict(s2(3.3))  # 1.32x
    assert missing is not None and missing.verdict == "MISS"
    failed = verdict(s2(1.0, non2xx=1))
    assert failed is not None and failed.verdict == "MISS" and "scenario failed" in failed.note
    assert verdict(s2(3.2), None) is None  # no model line in the run: no target
    meta = {"timestamp": "T", "quick": True, "machine": {"cpu_model": "cpu", "nproc": 2, "ram_gb": 8.0}}
    meta |= {"note": "", "rounds": 1, "duration_s": 10, "warmup_s": 3, "sizes": [2000], "full_size": 100000}
    md = report.render({"meta": meta | {"model_only": model}, "runs": [s2(3.2)]})
    assert "480 queries/s, 2.50 ms CPU per query over 4,800 queries" in md
    assert f"| {name} | 1.28x (3.20 vs 2.50 ms) | PASS |" in md
    # the line is a paragraph before the targets' table, not a row inside it
    assert md.index("S2's line, the model alone") < md.index("| target | measured | verdict |")


def test_a_non2xx_answer_fails_the_scenario_and_its_targets() -> None:
    runs = [
        _run("S1", report.GATEWAY, 900, non2xx=1),
        _run("S1", report.FLOOR, 1000),
        _run("S1", report.NAIVE, 10),
    ]
    aggs = report.aggregate(runs)
    assert aggs[("S1", report.GATEWAY)].failed
    v = _verdicts(runs, [2000])
    assert v["S1 RPS >= 3x P1"].verdict == "MISS" and "scenario failed" in v["S1 RPS >= 3x P1"].note
    assert v["S4 /rag p50 at 100k <= 2x p50 at 2k"].verdict == "SKIP"


def test_rounds_are_aggregated_by_median_and_rendered() -> None:
    runs = [_run("S1", report.GATEWAY, r) for r in (100, 300, 200)] + [_run("S1", report.FLOOR, 1000)]
    agg = report.aggregate(runs)[("S1", report.GATEWAY)]
    assert (agg.runs, agg.rps, agg.rps_min, agg.rps_max) == (3, 200, 100, 300)
    assert agg.cpu_s_per_1k == pytest.approx(3.0 / 6000 * 1000)
    doc = {
        "meta": {
            "timestamp": "T",
            "quick": True,
            "machine": {"cpu_model": "cpu", "nproc": 2, "ram_gb": 8.0},
            "note": "shared",
            "rounds": 3,
            "duration_s": 10,
            "warmup_s": 3,
            "sizes": [2000],
            "full_size": 100000,
        },
        "runs": runs,
    }
    md = report.render(doc)
    assert "| S1 | gateway | 200 (100–300) |" in md
    assert "| S1 RPS >= 40% of P0 | 20% (200 vs 1000) | MISS |" in md


def test_s4_reports_peak_rss_per_1k_points_and_per_added_1k() -> None:
    runs = [
        _run("S4", report.s4_server(2000), 50, rss=300.0),
        _run("S4", report.s4_server(20000), 45, rss=336.0),
        _run("S4", report.s4_server(100000), 40, rss=496.0),
    ]
    meta = {"timestamp": "T", "quick": False, "machine": {"cpu_model": "cpu", "nproc": 2, "ram_gb": 8.0}}
    meta |= {"note": "", "rounds": 1, "duration_s": 10, "warmup_s": 3, "s4_concurrency": 4}
    md = report.render({"meta": meta | {"sizes": [2000, 20000, 100000], "full_size": 100000}, "runs": runs})
    sized = ("| 2,000 |", "| 20,000 |", "| 100,000 |")
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith(sized)}
    assert rows["2,000"].endswith("| 300 | 150.00 | — |")
    assert rows["20,000"].endswith("| 336 | 16.80 | 2.00 |")
    assert rows["100,000"].endswith("| 496 | 4.96 | 2.00 |")


def test_recall_targets_use_the_biggest_shard_and_render_every_row() -> None:
    def row(mean: float) -> dict[str, Any]:
        return {"recall_mean": mean, "recall_min": 0.5, "below_0_9": 3, "queries": 200, "search_p50_ms": 0.9}

    recall = {
        "2000": {"64": {"tenant": row(1.0)}},
        "100000": {"64": {"tenant": row(0.975), "tenant+topic": row(0.99)}},
    }
    targets = {t.name: t for t in report.evaluate({}, [2000, 100000], 100000, recall) if "recall" in t.name}
    assert {name: t.ok for name, t in targets.items()} == {
        "S4 recall@10 >= 0.98 at 100k, tenant, ef=64": False,
        "S4 recall@10 >= 0.98 at 100k, tenant+topic, ef=64": True,
    }
    lines = report.recall_lines(recall)
    assert len(lines) == 2 + 3 and "| 100,000 | tenant | 64 | 0.9750 | 0.50 | 3 of 200 | 0.90 |" in lines


def test_s6_compares_p95_during_a_job_with_no_job_and_reports_the_jobs_rates() -> None:
    runs = [
        _run("S6", report.NO_JOB, 90, p95=100),
        _run("S6", report.DURING_JOB, 70, p95=190),
    ]
    assert _verdicts(runs, [2000])["S6 /rag p95 during an ingestion job <= 2x without"].verdict == "PASS"
    runs[1] = _run("S6", report.DURING_JOB, 60, p95=201)
    target = _verdicts(runs, [2000])["S6 /rag p95 during an ingestion job <= 2x without"]
    assert (target.verdict, target.measured) == ("MISS", "2.01x (201 vs 100 ms)")
    rounds = [
        {"round": 1, "passages": 20000, "loaded_per_s": 40.0, "alone_per_s": 100.0, "ended_early": False},
        {"round": 2, "passages": 20000, "loaded_per_s": 60.0, "alone_per_s": 120.0, "ended_early": True},
    ]
    lines = report.ingest_lines(rounds)
    assert "50.0 passages/s under S2's load, 110.0 passages/s alone" in lines[0]
    assert "45% of its rate alone" in lines[0]
    assert lines[1] == "Note: the S6 job ended before its windows did in round(s) 2."
    doc = {
        "meta": {
            "timestamp": "T",
            "quick": True,
            "machine": {"cpu_model": "cpu", "nproc": 2, "ram_gb": 8.0},
            "note": "",
            "rounds": 2,
            "duration_s": 10,
            "warmup_s": 3,
            "sizes": [2000],
            "full_size": 100000,
            "ingest": rounds,
        },
        "runs": runs,
    }
    md = report.render(doc)
    assert f"| S6 | {report.DURING_JOB} | 60 |" in md and lines[0] in md


METRICS = """# HELP rag_answer_cache_hit_total Whole answers served from the cache
# TYPE rag_answer_cache_hit_total counter
rag_answer_cache_hit_total 1234.0
# HELP rag_answer_cache_miss_total Whole answers computed (not in the cache)
# TYPE rag_answer_cache_miss_total counter
rag_answer_cache_miss_total 56.0
rag_answer_cache_hit_totally_different 9.0
"""


def test_answer_cache_counts_are_read_from_the_metrics_text() -> None:
    assert loadgen.answer_cache_counts(METRICS) == {"hits": 1234, "misses": 56}
    assert loadgen.answer_cache_counts("") == {"hits": 0, "misses": 0}


def test_zipf_mix_is_deterministic_skewed_and_over_its_queries() -> None:
    queries = [f"q{i}" for i in range(5000)]
    a = data.ZipfMix(queries, 1.1, seed=7).sample(20000)
    assert a == data.ZipfMix(queries, 1.1, seed=7).sample(20000)
    assert a != data.ZipfMix(queries, 1.1, seed=8).sample(20000)
    counts = Counter(a)
    assert set(counts) <= set(queries)
    # P(rank 1) = 1 / H(5000, 1.1), about 0.147; rank 2 is drawn 2**-1.1 times as often
    h = sum(r**-1.1 for r in range(1, 5001))
    assert counts["q0"] / len(a) == pytest.approx(1 / h, rel=0.05)
    assert counts["q1"] / counts["q0"] == pytest.approx(2**-1.1, rel=0.1)
    assert counts.most_common(1)[0][0] == "q0"
    lines = data.ZipfMix(queries, 1.1, seed=7).body_lines(3, 50)
    assert [json.loads(line) for line in lines] == [{"q": q, "k": 50} for q in a[:3]]


def test_zipf_queries_are_the_first_distinct_queries() -> None:
    passages = [{"text": f"alpha beta gamma delta epsilon zeta eta theta iota kappa {i}"} for i in range(50)]
    qs = data.zipf_queries(passages, 40, seed=3)
    assert len(qs) == len(set(qs)) == 40
    assert qs == list(itertools.islice(data.distinct_queries(passages, 3), 40))


def _recorder() -> tuple[type[BaseHTTPRequestHandler], list[str]]:
    """A handler for POST /rag that records each request in the returned list; a body with
    "bad" is answered 503, one with "drop" gets its connection closed with no answer, one with
    "hang" is answered after 3 s."""
    seen: list[str] = []
    lock = threading.Lock()

    class Recorder(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"])).decode()
            with lock:
                seen.append(f"{self.path} {self.headers['content-type']} {body}")
            if "drop" in body:
                self.close_connection = True
                return
            if "hang" in body:
                time.sleep(3)
            self.send_response(503 if "bad" in body else 200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    return Recorder, seen


def test_send_each_posts_every_body_exactly_once_and_counts_what_failed() -> None:
    handler, seen = _recorder()
    server = serve_in_thread(handler)
    try:
        bodies = [json.dumps({"q": f"q{i}", "k": 50}) for i in range(300)]
        bodies[7] = '{"q": "bad one"}'
        bodies[99] = '{"q": "bad two"}'
        bodies[150] = '{"q": "drop"}'
        non2xx, errors = loadgen.send_each(f"http://127.0.0.1:{server.server_port}", bodies, 20)
    finally:
        server.shutdown()
        server.server_close()
    assert non2xx == 2
    assert errors == ["RemoteProtocolError: Server disconnected without sending a response."]
    # httpx may send the dropped request again on a fresh connection: every other body once
    counts = Counter(seen)
    assert {f"/rag application/json {b}" for b in bodies} == set(counts)
    assert {line: n for line, n in counts.items() if n != 1 and "drop" not in line} == {}


def test_send_each_gives_up_at_its_deadline_and_says_how_many_went_unanswered() -> None:
    handler, _ = _recorder()
    server = serve_in_thread(handler)
    try:
        bodies = [json.dumps({"q": f"q{i}"}) for i in range(10)] + ['{"q": "hang"}'] * 3
        non2xx, errors = loadgen.send_each(f"http://127.0.0.1:{server.server_port}", bodies, 4, total_s=1)
    finally:
        server.shutdown()
        server.server_close()
    assert non2xx == 0
    assert errors == ["stopped after 1 s: 3 of 13 bodies without an answer"]


def _cached(scenario: str, server: str, rps: float, hits: int, misses: int, **kw: Any) -> Any:
    return {**_run(scenario, server, rps, **kw), "answer_cache": {"hits": hits, "misses": misses}}


def test_s7_compares_the_answer_cache_on_and_off_and_prints_the_hit_rate() -> None:
    runs = [
        _cached("S7", report.CACHED, 600, 900, 100, p95=30),
        _cached("S7", report.CACHED, 700, 950, 50, p95=40),
        _run("S7", report.GATEWAY, 190, p95=150),
        _run("S7", report.GATEWAY, 200, p95=160),
    ]
    agg = report.aggregate(runs)
    assert agg[("S7", report.CACHED)].answer_cache == {"hits": 1850, "misses": 150}
    assert agg[("S7", report.CACHED)].hit_rate == pytest.approx(0.925)
    assert agg[("S7", report.GATEWAY)].answer_cache is None
    target = _verdicts(runs, [2000])["S7 RPS with the answer cache >= 3x without"]
    assert target.verdict == "PASS"  # 650 / 195 = 3.3x
    assert target.measured == "3.3x (650 vs 195); p95 35 vs 155 ms; answer-cache hit rate 92.5%"
    runs[1] = _cached("S7", report.CACHED, 500, 950, 50)
    assert _verdicts(runs, [2000])["S7 RPS with the answer cache >= 3x without"].verdict == "MISS"  # 2.8x
    runs[2] = _run("S7", report.GATEWAY, 50, non2xx=2)
    target = _verdicts(runs, [2000])["S7 RPS with the answer cache >= 3x without"]
    assert target.verdict == "MISS" and "scenario failed" in target.note
    doc = {
        "meta": {
            "timestamp": "T",
            "quick": True,
            "machine": {"cpu_model": "cpu", "nproc": 2, "ram_gb": 8.0},
            "note": "",
            "rounds": 2,
            "duration_s": 4,
            "warmup_s": 2,
            "sizes": [2000],
            "full_size": 100000,
            "zipf": {"s": 1.1, "distinct": 5000, "seed": 7, "query_seed": 3},
        },
        "runs": [{**r, "result": {**r["result"], "wrapped": 3}} for r in runs],
    }
    md = report.render(doc)
    assert f"- S7 {report.CACHED}: 1,850 hits, 150 misses, hit rate 92.5%" in md
    assert "S7 mix: Zipf s=1.1 over 5,000 distinct queries" in md
    off = _cached("S7", report.GATEWAY, 200, 0, 0)
    assert f"- S7 {report.GATEWAY}: 0 hits, 0 misses, no lookups (cache off)" in report.render(
        {**doc, "runs": [off]}
    )
    assert "lists wrapped" not in md  # S7 repeats by design


def test_s1_with_the_answer_cache_is_held_to_40_percent_of_p0() -> None:
    runs = [
        _run("S1", report.GATEWAY, 400),
        _cached("S1", report.CACHED, 4500, 45000, 0),
        _run("S1", report.FLOOR, 10000),
    ]
    v = _verdicts(runs, [2000])
    assert v["S1 RPS >= 40% of P0"].verdict == "MISS"  # the gateway without it: 4%
    target = v["S1 +answer cache RPS >= 40% of P0"]
    assert (target.verdict, target.measured) == (
        "PASS",
        "45% (4500 vs 10000); answer-cache hit rate 100.0%",
    )
    runs[1] = _cached("S1", report.CACHED, 3900, 39000, 0)
    assert _verdicts(runs, [2000])["S1 +answer cache RPS >= 40% of P0"].verdict == "MISS"


def test_s5_prints_the_cost_at_10_percent_sampling_beside_the_always_on_target() -> None:
    runs = [
        _run("S5", report.GATEWAY, 500),
        _run("S5", report.TRACED, 400),
        _run("S5", report.TRACED_SAMPLED, 490),
    ]
    meta = {"timestamp": "T", "quick": True, "machine": {"cpu_model": "cpu", "nproc": 2, "ram_gb": 8.0}}
    meta |= {"note": "", "rounds": 1, "duration_s": 10, "warmup_s": 3, "sizes": [2000], "full_size": 100000}
    md = report.render({"meta": meta, "runs": runs})
    assert "| S5 tracing costs <= 10% of S1 RPS | 20% (400 on vs 500 off) | MISS |" in md
    assert "tracing cost 2% of S1's RPS (490 vs 500)" in md
    assert not any("sampl" in t.name for t in report.evaluate(report.aggregate(runs), [2000], 100000))


def test_distinct_queries_fail_loudly_when_the_space_is_used_up() -> None:
    tiny = [{"text": "one two three four five"}]  # a handful of distinct word windows
    stream = data.distinct_queries(tiny, 1)
    made: list[str] = []
    error = ""
    try:
        for q in stream:  # the sample queries, then every window, then the error
            made.append(q)
            if len(made) > 10_000:
                break
    except RuntimeError as exc:
        error = str(exc)
    assert error.startswith("no new distinct query"), (error, len(made))
    assert len(made) == len(set(made)) and "one two three" in made


def test_s7_warms_up_by_a_count_of_requests_and_not_at_all_with_no_warmup() -> None:
    from argparse import Namespace

    from bench import run

    def plan(**kw: Any) -> Any:
        args = {"quick": False, "duration": None, "warmup": None, "rounds": None, "sizes": None}
        return run.make_plan(Namespace(**(args | {"scenarios": None, "ingest_share": None} | kw)))

    assert plan().s7_warmup_requests == run.S7_WARMUP_REQUESTS == 2 * run.ZIPF_DISTINCT
    assert plan(quick=True).s7_warmup_requests == run.S7_QUICK_WARMUP_REQUESTS
    assert plan(warmup=5.0).s7_warmup_requests == run.S7_WARMUP_REQUESTS
    assert plan(warmup=0.0).s7_warmup_requests == 0
    assert plan(quick=True, warmup=0.0).s7_warmup_requests == 0
