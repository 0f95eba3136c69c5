"""`make bench` / `python -m bench [--quick]`: every scenario against every server, in one run.

1. Prepare the data (cached under bench/.cache/): the synthetic corpus and its embeddings, an
   embedded Qdrant shard per S4 size, the naive peer's qdrant-client directory.
2. Start redis-server, a local OTLP/HTTP receiver, the gateway (2k corpus), two gateways with
   tracing on (S5: every trace, and 10% of them), one with the answer cache on (S1, S7), one
   for S6's ingestion jobs (each on its own copy of the 2k shard), one gateway per larger S4
   size, P1 naive and P0 floor (whose fixed body is a real /rag answer captured from the
   gateway). All stay up for the whole run.
3. Per scenario: warm up every server, then run the rounds, alternating the server order
   (A B C, C B A, ...), so drift on a shared machine hits every server alike. S6 alternates
   within its one gateway instead: no job, then a job (bench/ingest.py). S7 warms both of its
   gateways with the same 10,000 requests of its Zipf mix (a count, not seconds; 2,000 in a
   quick run; none with `--warmup 0`), then sends
   the same Zipf-distributed body file to the gateway with the answer cache on and to the one
   with it off in each round, and reads the answer-cache counters of their /metrics around
   every run.
4. Write bench/results/<timestamp>.json (every run) and .md (the table, ratios and target
   verdicts) and print the table.

Exit status 1 if any scenario or S7 warm-up failed (a non-2xx answer or a transport error);
target MISSes are reported, not fatal.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.clients.vectorstore.files import copy_tree
from app.settings import QdrantSettings
from bench import data, ingest, loadgen, modelonly, recall, report, servers
from bench.data import log

ROOT = data.ROOT
RESULTS = ROOT / "bench" / "results"
RUN_DIR = data.CACHE / "run"
FULL_SIZES = [2000, 20000, 100000]
QUICK_SIZES = [2000, 20000]
CORPUS_N = 2000
QUERY_SEED = 1
# wrk bodies per run: enough distinct queries that a gateway or P1 run never wraps
BODIES_PER_SECOND = 800
# S7: a Zipf mix (s, distinct queries, sampling seed); answered from the cache it runs faster
ZIPF_S = 1.1
ZIPF_DISTINCT = 5000
ZIPF_SEED = 7
ZIPF_QUERY_SEED = QUERY_SEED + 2
S7_BODIES_PER_SECOND = 4000
# S7's warm-up is a number of requests (the same sample to both gateways), not seconds: a cache's
# state depends on how many requests it has seen, and a time would warm it less on a slower day.
# A quick run sends fewer (it is a smoke test; its S7 ratio is of a colder cache)
S7_WARMUP_REQUESTS = 2 * ZIPF_DISTINCT
S7_QUICK_WARMUP_REQUESTS = 2000


@dataclass
class Plan:
    quick: bool
    duration_s: float
    warmup_s: float
    rounds: int
    sizes: list[int]
    scenarios: list[str]
    concurrency: int = 20
    s4_concurrency: int = 4
    ingest_share: float | None = None  # S6 gateway's RAG_EMBEDDER__INGEST_SHARE (None: default)
    s7_warmup_requests: int = S7_WARMUP_REQUESTS


def make_plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        plan = Plan(True, 4, 2, 1, list(QUICK_SIZES), list(report.SCENARIOS))
        plan.s7_warmup_requests = S7_QUICK_WARMUP_REQUESTS
    else:
        plan = Plan(False, 10, 3, 3, list(FULL_SIZES), list(report.SCENARIOS))
    if args.duration:
        plan.duration_s = args.duration
    if args.warmup is not None:
        plan.warmup_s = args.warmup
        if args.warmup <= 0:
            plan.s7_warmup_requests = 0
    if args.rounds:
        plan.rounds = args.rounds
    if args.sizes:
        plan.sizes = sorted({int(s) for s in args.sizes.split(",")})
    if args.scenarios:
        plan.scenarios = [s.strip().upper() for s in args.scenarios.split(",")]
    plan.ingest_share = args.ingest_share
    return plan


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def tool_versions() -> dict[str, str]:
    out = {}
    for tool, args in (("wrk", ["-v"]), ("redis-server", ["--version"])):
        p = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
        out[tool] = (p.stdout + p.stderr).strip().splitlines()[0] if (p.stdout + p.stderr).strip() else ""
    p = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "hey"], capture_output=True, text=True, check=False
    )
    out["hey"] = p.stdout.strip() or "unknown"
    return out


def git_revision() -> str:
    p = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    rev = p.stdout.strip() or "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "app"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return rev + ("+local app changes" if dirty else "")


class Bench:
    def __init__(self, plan: Plan, model_dir: Path) -> None:
        self.plan = plan
        self.model_dir = model_dir
        self.runs: list[dict[str, Any]] = []
        self.procs: list[servers.Server] = []
        self.by_name: dict[str, servers.Server] = {}
        self.skipped: list[str] = []
        self._passages: list[dict[str, str]] = []
        # one distinct-query stream per server process: distinctness matters only within a
        # process (its caches), and one stream shared by every server ran out of new queries
        self._streams: dict[str, Iterator[str]] = {}
        self._bodies = itertools.count()
        self.sink = servers.OtlpSink()
        self.recall: dict[str, dict[str, Any]] = {}
        self.ingest: list[dict[str, Any]] = []  # S6: the job's rates per round
        self.zipf: data.ZipfMix | None = None  # S7
        self.warmup_failures: list[str] = []  # warm-ups with a non-2xx or unanswered request
        self.model_only: dict[str, Any] | None = None  # S2's line: the model's own cost per query

    # ------------------------------------------------------------ setup

    def prepare(self) -> dict[int, Path]:
        corpus = data.load_corpus(CORPUS_N, self.model_dir)
        self._passages = corpus.passages
        sized = {n: corpus if n == CORPUS_N else data.load_corpus(n, self.model_dir) for n in self.plan.sizes}
        shards = {n: data.shard_root(c, n) for n, c in sized.items()}
        shards[CORPUS_N] = shards.get(CORPUS_N) or data.shard_root(corpus, CORPUS_N)
        self.naive_path = data.naive_root(corpus)
        if "S7" in self.plan.scenarios:
            queries = data.zipf_queries(corpus.passages, ZIPF_DISTINCT, ZIPF_QUERY_SEED)
            self.zipf = data.ZipfMix(queries, ZIPF_S, ZIPF_SEED)
        if "S2" in self.plan.scenarios:
            # before any server starts: this process and the machine do nothing else meanwhile
            log(f"S2 line: the model alone, in this process, batch {modelonly.BATCH}")
            stream = data.distinct_queries(corpus.passages, QUERY_SEED + 3)
            self.model_only = modelonly.measure(self.model_dir, stream, self.plan.duration_s)
        if "S4" in self.plan.scenarios:
            # before any server opens a shard: one process owns an embedded shard directory
            stream = data.distinct_queries(corpus.passages, QUERY_SEED + 1)
            vectors = recall.embed_queries(self.model_dir, [next(stream) for _ in range(recall.QUERIES)])
            ef = QdrantSettings().ef_default
            for n, c in sized.items():
                log(f"recall@10 of the {n}-point shard against exact search (ef={ef})")
                self.recall[str(n)] = {
                    str(ef): recall.measure(shards[n], data.COLLECTION, data.TENANT, c.passages, vectors, ef)
                }
        return shards

    def start(self, shards: dict[int, Path]) -> None:
        shutil.rmtree(RUN_DIR, ignore_errors=True)
        RUN_DIR.mkdir(parents=True)
        redis = servers.redis_server(RUN_DIR)
        self._launch([redis])
        redis.wait_listening(15)
        self.sink.start()

        def rurl(db: int) -> str:
            return f"redis://127.0.0.1:{redis.port}/{db}"

        gw = servers.gateway("gateway", shards[CORPUS_N], self.model_dir, rurl(0), RUN_DIR)
        wanted: list[tuple[str, servers.Server]] = [(report.GATEWAY, gw), (report.s4_server(CORPUS_N), gw)]
        if "S5" in self.plan.scenarios:
            # its own copy: one process owns an embedded shard directory
            traced_path = RUN_DIR / "traced-shard"
            copy_tree(shards[CORPUS_N], traced_path)
            traced = servers.gateway(
                "gateway-traced", traced_path, self.model_dir, rurl(1), RUN_DIR, otlp=self.sink.endpoint
            )
            wanted.append((report.TRACED, traced))
            # the same at a typical production sampling rate: what the target is not about, but
            # what an operator who samples pays
            sampled_path = RUN_DIR / "sampled-shard"
            copy_tree(shards[CORPUS_N], sampled_path)
            sampled = servers.gateway(
                "gateway-traced-sampled",
                sampled_path,
                self.model_dir,
                rurl(12),
                RUN_DIR,
                otlp=self.sink.endpoint,
                extra_env={
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": str(report.SAMPLED_RATIO),
                },
            )
            wanted.append((report.TRACED_SAMPLED, sampled))
        if {"S1", "S7"} & set(self.plan.scenarios):
            # the gateway as shipped (the answer cache on, its defaults), on its own shard copy
            cached_path = RUN_DIR / "cached-shard"
            copy_tree(shards[CORPUS_N], cached_path)
            cached = servers.gateway(
                "gateway-answer-cache",
                cached_path,
                self.model_dir,
                rurl(13),
                RUN_DIR,
                extra_env={"RAG_ANSWER_CACHE__ENABLED": "true"},
            )
            wanted.append((report.CACHED, cached))
        if "S6" in self.plan.scenarios:
            # its own copy, which the S6 jobs write to; its jobs directory is beside it
            ingest_path = RUN_DIR / "ingest-shard" / "qdrant"
            copy_tree(shards[CORPUS_N], ingest_path)
            busy = servers.gateway(
                "gateway-ingest",
                ingest_path,
                self.model_dir,
                rurl(14),
                RUN_DIR,
                # commits often enough that the job's rate over one measured window is exact
                # to a few passages (a query waits behind one model call whatever the batch)
                extra_env={
                    "RAG_JOBS__BATCH_DOCS": str(ingest.BATCH_DOCS),
                    **(
                        {"RAG_EMBEDDER__INGEST_SHARE": str(self.plan.ingest_share)}
                        if self.plan.ingest_share
                        else {}
                    ),
                },
            )
            wanted += [(report.NO_JOB, busy), (report.DURING_JOB, busy)]
        if "S4" in self.plan.scenarios:
            for i, size in enumerate(s for s in self.plan.sizes if s != CORPUS_N):
                s4 = servers.gateway(f"gateway-{size}", shards[size], self.model_dir, rurl(2 + i), RUN_DIR)
                s4.info["points"] = size
                wanted.append((report.s4_server(size), s4))
        naive = servers.naive(self.naive_path, rurl(15), RUN_DIR)
        wanted.append((report.NAIVE, naive))
        unique = list({id(s): s for _, s in wanted}.values())
        log(f"starting {len(unique)} servers")
        self._launch(unique)
        for s in unique:
            s.wait_listening()
        answer = gw.post_rag(loadgen.HOT_BODY.encode())
        body_file = RUN_DIR / "answer.json"
        body_file.write_bytes(answer)
        floor = servers.floor(body_file, RUN_DIR)
        self._launch([floor])
        floor.wait_listening()
        wanted.append((report.FLOOR, floor))
        self.by_name = dict(wanted)
        self.answer_bytes = len(answer)
        for name, s in self.by_name.items():
            s.post_rag(loadgen.HOT_BODY.encode())
            log(f"{name}: ready on :{s.port} (pid {s.pid})")

    def _launch(self, procs: list[servers.Server]) -> None:
        for p in procs:
            p.start()
            self.procs.append(p)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.sink.stop()

    # ------------------------------------------------------------ load

    def _bodies_file(self, server: servers.Server, rerank: bool, count: int) -> Path:
        stream = self._streams.get(server.name)
        if stream is None:  # the same sequence for every server: each is sent the same queries
            stream = self._streams[server.name] = data.distinct_queries(self._passages, QUERY_SEED)
        path = RUN_DIR / f"bodies-{next(self._bodies):04d}.jsonl"
        path.write_text("\n".join(data.body_lines(stream, count, 50, rerank)) + "\n")
        return path

    def _command(self, scenario: str, server: servers.Server, seconds: float) -> list[str]:
        if scenario in ("S1", "S5"):
            return loadgen.hey_command(server.url + "/rag", seconds, self.plan.concurrency)
        rerank = scenario != "S3"
        # P0 ignores the body: a short list that wraps is enough there
        count = 500 if server.kind == "floor" else int(seconds * BODIES_PER_SECOND) + 200
        conns = self.plan.s4_concurrency if scenario == "S4" else self.plan.concurrency
        return loadgen.wrk_command(
            server.url,
            self._bodies_file(server, rerank, count),
            seconds,
            connections=conns,
            timings=server.kind == "gateway",
        )

    def scenario(self, sid: str, names: list[str]) -> None:
        names = [n for n in names if n in self.by_name]
        log(f"{sid}: {report.SCENARIOS[sid]} — {', '.join(names)}")
        for name in names:
            if self.plan.warmup_s > 0:
                server = self.by_name[name]
                loadgen.run_load(
                    self._command(sid, server, self.plan.warmup_s), server.pid, self.plan.warmup_s + 60
                )
        for rnd in range(self.plan.rounds):
            order = names if rnd % 2 == 0 else list(reversed(names))
            for pos, name in enumerate(order):
                server = self.by_name[name]
                cached = name == report.CACHED
                before = self._answer_cache_counts(server) if cached else {}
                r = loadgen.run_load(
                    self._command(sid, server, self.plan.duration_s), server.pid, self.plan.duration_s + 90
                )
                run: dict[str, Any] = {
                    "scenario": sid,
                    "server": name,
                    "round": rnd + 1,
                    "position": pos,
                    "result": r.as_dict(),
                }
                if cached:
                    after = self._answer_cache_counts(server)
                    run["answer_cache"] = {k: after[k] - before[k] for k in after}
                self.runs.append(run)
                flag = f" non-2xx {r.non2xx}" if r.non2xx else ""
                flag += f" errors {r.errors}" if r.errors else ""
                log(
                    f"  {sid} {name:<18} round {rnd + 1}/{self.plan.rounds}: {r.rps:8.1f} RPS  "
                    f"p50 {r.p50_ms:7.1f}  p95 {r.p95_ms:7.1f}  p99 {r.p99_ms:7.1f} ms  "
                    f"cpu/1k {r.cpu_s_per_1k:.3f}s  rss {r.rss_hwm_mb:.0f} MB{flag}"
                )

    def _measure(self, sid: str, name: str, rnd: int, pos: int) -> loadgen.LoadResult:
        server = self.by_name[name]
        r = loadgen.run_load(
            self._command(sid, server, self.plan.duration_s), server.pid, self.plan.duration_s + 90
        )
        self.runs.append(
            {"scenario": sid, "server": name, "round": rnd + 1, "position": pos, "result": r.as_dict()}
        )
        log(
            f"  {sid} {name:<18} round {rnd + 1}/{self.plan.rounds}: {r.rps:8.1f} RPS  "
            f"p95 {r.p95_ms:7.1f} ms{f' non-2xx {r.non2xx}' if r.non2xx else ''}"
        )
        return r

    def s6(self) -> None:
        """S2's load on one gateway with no job, then while a fresh 20k-passage job runs on it,
        then the job alone; the job is cancelled once measured (bench/ingest.py)."""
        server = self.by_name[report.DURING_JOB]
        log(f"S6: {report.SCENARIOS['S6']}")
        docs = ingest.passages()
        if self.plan.warmup_s > 0:
            loadgen.run_load(
                self._command("S6", server, self.plan.warmup_s), server.pid, self.plan.warmup_s + 60
            )
        for rnd in range(self.plan.rounds):
            self._measure("S6", report.NO_JOB, rnd, 0)
            job = ingest.submit(server.url, ingest.job_file(RUN_DIR, f"r{rnd + 1}", docs), data.TENANT)
            job.wait_embedding()
            a = job.documents()
            self._measure("S6", report.DURING_JOB, rnd, 1)
            b = job.documents()
            time.sleep(self.plan.duration_s)  # the job alone
            c = job.documents()
            end = job.cancel()
            self.ingest.append(
                {
                    "round": rnd + 1,
                    "passages": len(docs),
                    "loaded_per_s": round(ingest.rate(a, b), 1),
                    "alone_per_s": round(ingest.rate(b, c), 1),
                    "ended_early": c[2] not in ingest.RUNNING,
                    "documents": end["documents"],
                }
            )
            log(f"  S6 job round {rnd + 1}: {self.ingest[-1]}")

    def _zipf_file(self, seconds: float) -> Path:
        assert self.zipf is not None
        path = RUN_DIR / f"zipf-{next(self._bodies):04d}.jsonl"
        count = int(seconds * S7_BODIES_PER_SECOND) + 200
        path.write_text("\n".join(self.zipf.body_lines(count, 50)) + "\n")
        return path

    def _answer_cache_counts(self, server: servers.Server) -> dict[str, int]:
        return loadgen.answer_cache_counts(server.get_text("/metrics"))

    def s7(self) -> None:
        """The Zipf mix against the gateway with the answer cache on and with it off: each round
        sends one body file (a fresh sample of the same mix) to both, in alternating order."""
        names = [report.CACHED, report.GATEWAY]
        log(f"S7: {report.SCENARIOS['S7']} — {', '.join(names)}")
        if self.plan.s7_warmup_requests > 0:
            assert self.zipf is not None
            lines = self.zipf.body_lines(self.plan.s7_warmup_requests, 50)
            for name in names:
                server = self.by_name[name]
                before = self._answer_cache_counts(server)
                started = time.monotonic()
                non2xx, errors = loadgen.send_each(server.url, lines, self.plan.concurrency)
                after = self._answer_cache_counts(server)
                hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
                if non2xx or errors:
                    why = "; ".join(sorted(set(errors)))
                    self.warmup_failures.append(
                        f"S7 {name}: non-2xx {non2xx}, no answer {len(errors)} ({why})"
                    )
                log(
                    f"  S7 {name:<22} warm-up: {len(lines)} requests in {time.monotonic() - started:.1f} s, "
                    f"answer cache hits {hits}, misses {misses}"
                    + (f", non-2xx {non2xx}" if non2xx else "")
                    + (f", no answer {len(errors)}" if errors else "")
                )
        for rnd in range(self.plan.rounds):
            bodies = self._zipf_file(self.plan.duration_s)
            order = names if rnd % 2 == 0 else list(reversed(names))
            for pos, name in enumerate(order):
                server = self.by_name[name]
                cmd = loadgen.wrk_command(
                    server.url, bodies, self.plan.duration_s, self.plan.concurrency, timings=True
                )
                before = self._answer_cache_counts(server)
                r = loadgen.run_load(cmd, server.pid, self.plan.duration_s + 90)
                after = self._answer_cache_counts(server)
                counts = {k: after[k] - before[k] for k in after}
                self.runs.append(
                    {
                        "scenario": "S7",
                        "server": name,
                        "round": rnd + 1,
                        "position": pos,
                        "result": r.as_dict(),
                        "answer_cache": counts,
                    }
                )
                looked_up = counts["hits"] + counts["misses"]
                rate = f"{counts['hits'] / looked_up:.1%}" if looked_up else "-"
                log(
                    f"  S7 {name:<22} round {rnd + 1}/{self.plan.rounds}: {r.rps:8.1f} RPS  "
                    f"p95 {r.p95_ms:7.1f} ms  answer cache hits {counts['hits']}, misses "
                    f"{counts['misses']} ({rate}){f' non-2xx {r.non2xx}' if r.non2xx else ''}"
                )

    def run_all(self) -> None:
        peers = [report.GATEWAY, report.FLOOR, report.NAIVE]
        for sid in self.plan.scenarios:
            if sid == "S1":
                self.scenario(sid, [report.GATEWAY, report.CACHED, report.FLOOR, report.NAIVE])
            elif sid in ("S2", "S3"):
                self.scenario(sid, peers)
            elif sid == "S4":
                self.scenario(sid, [report.s4_server(n) for n in self.plan.sizes])
            elif sid == "S5":
                self.scenario(sid, [report.GATEWAY, report.TRACED, report.TRACED_SAMPLED])
            elif sid == "S6":
                self.s6()
            elif sid == "S7":
                self.s7()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 4 s, S4 at 2k and 20k only (< 3 min)"
    )
    parser.add_argument("--duration", type=float, help="seconds per measured run (default 10; quick 4)")
    parser.add_argument(
        "--warmup",
        type=float,
        help="seconds of warm-up per server and scenario (S7 warms by a count of requests; 0: none at all)",
    )
    parser.add_argument("--rounds", type=int, help="measured runs per server and scenario (default 3)")
    parser.add_argument("--sizes", help="S4 collection sizes, comma-separated (default 2000,20000,100000)")
    parser.add_argument("--scenarios", help="subset to run, e.g. S1,S5 (default all)")
    parser.add_argument("--note", default="", help="free text recorded with the results")
    parser.add_argument(
        "--ingest-share",
        type=float,
        help="S6: the gateway's RAG_EMBEDDER__INGEST_SHARE (default: its default; 1 = no priority lane)",
    )
    args = parser.parse_args(argv)
    plan = make_plan(args)
    for tool in ("hey", "wrk", "redis-server"):
        if shutil.which(tool) is None:
            print(
                f"error: {tool} is not installed (apt-get install -y hey wrk redis-server)", file=sys.stderr
            )
            return 2
    model_dir = Path(os.environ.get("RAG_EMBEDDER__MODEL_DIR", "data/models/all-MiniLM-L6-v2"))
    if not model_dir.is_absolute():
        model_dir = ROOT / model_dir
    if not (model_dir / "manifest.json").exists():
        print(f"error: no exported model in {model_dir}: run `make model`", file=sys.stderr)
        return 2

    skipped = []
    if plan.quick and FULL_SIZES[-1] not in plan.sizes:
        skipped.append(
            f"S4 at {report.size_label(FULL_SIZES[-1])} points (quick mode: its shard build and load take "
            f"minutes); S4 runs at {', '.join(report.size_label(s) for s in plan.sizes)}"
        )
        log("quick mode: " + skipped[-1])
    started = datetime.now(UTC)
    t0 = time.monotonic()
    load_start = os.getloadavg()[0]
    bench = Bench(plan, model_dir)
    shards = bench.prepare()
    prep_s = time.monotonic() - t0
    try:
        bench.start(shards)
        bench.run_all()
    finally:
        bench.stop()
    total_s = time.monotonic() - t0
    note = f"load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end"
    if args.note:
        note = f"{args.note}; {note}"
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    doc = {
        "meta": {
            "timestamp": stamp,
            "quick": plan.quick,
            "machine": machine(),
            "note": note,
            "rounds": plan.rounds,
            "duration_s": plan.duration_s,
            "warmup_s": plan.warmup_s,
            "concurrency": plan.concurrency,
            "s4_concurrency": plan.s4_concurrency,
            "ingest_share": plan.ingest_share,
            "sizes": plan.sizes,
            "full_size": FULL_SIZES[-1],
            "scenarios": plan.scenarios,
            "skipped": skipped,
            "answer_bytes": bench.answer_bytes,
            "otlp": {"requests": bench.sink.requests, "bytes": bench.sink.bytes}
            if "S5" in plan.scenarios
            else None,
            "tools": tool_versions(),
            "revision": git_revision(),
            "prepare_s": round(prep_s, 1),
            "recall": bench.recall,
            "model_only": bench.model_only,
            "ingest": bench.ingest,
            "zipf": {
                "s": ZIPF_S,
                "distinct": ZIPF_DISTINCT,
                "seed": ZIPF_SEED,
                "query_seed": ZIPF_QUERY_SEED,
                "warmup_requests": plan.s7_warmup_requests,
            }
            if "S7" in plan.scenarios
            else None,
            "total_s": round(total_s, 1),
            "servers": {
                name: {
                    "kind": s.kind,
                    "cmd": " ".join(Path(c).name if "/" in c else c for c in s.cmd[:4]),
                    **s.info,
                }
                for name, s in bench.by_name.items()
            },
        },
        "runs": bench.runs,
    }
    doc["targets"] = report.targets_dicts(doc)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stamp}.json").write_text(json.dumps(doc, indent=1) + "\n")
    md = report.render(doc)
    (RESULTS / f"{stamp}.md").write_text(md)
    print(md)
    log(
        f"wrote bench/results/{stamp}.json and .md; data preparation {prep_s:.0f}s, total {total_s:.0f}s "
        f"({'quick' if plan.quick else 'full'} run)"
    )
    failed = [a for a in report.aggregate(bench.runs).values() if a.failed]
    for line in bench.warmup_failures:
        log(f"warm-up failed: {line}")
    return 1 if failed or bench.warmup_failures else 0
