"""Aggregate the runs of a benchmark, check the targets of issues 6 and 16 and render the Markdown report.

Pure functions over plain dicts (what the results JSON holds), so they are unit-tested on
canned numbers and can re-render an old results file:

    python -m bench.report bench/results/<timestamp>.json
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GATEWAY = "gateway"  # RAG_ANSWER_CACHE__ENABLED=false: every request runs the pipeline
FLOOR = "P0 floor"
NAIVE = "P1 naive"
TRACED = "gateway +tracing"
SAMPLED_RATIO = 0.1
TRACED_SAMPLED = "gateway +tracing, 10% sampled"  # OTEL_TRACES_SAMPLER=parentbased_traceidratio
CACHED = "gateway +answer cache"  # as shipped: the answer cache on, its settings default

SCENARIOS = {
    "S1": "hot: the same query, c=20 (hey)",
    "S2": "cold: distinct queries, rerank on, c=20 (wrk)",
    "S3": "retrieval only: distinct queries, rerank off, c=20 (wrk)",
    "S4": "growth: distinct queries, rerank on, by collection size (wrk)",
    "S5": "observability: S1 with the OTLP exporter on vs off (hey)",
    "S6": "queries first: S2's load while a 20k-passage ingestion job runs vs no job (wrk)",
    "S7": "repeats: a Zipf mix (s=1.1) over 5,000 distinct queries, rerank on, c=20, "
    "answer cache on vs off (wrk)",
}
NO_JOB = "gateway, no job"
DURING_JOB = "gateway +ingest job"

RSS_LIMIT_MB = 400.0


RECALL_TARGET = 0.98
MODEL_CPU_LIMIT = 1.3  # S2 CPU per request against the model's own per query at batch 16
TRACING_COST_LIMIT = 0.10  # S5: share of S1's RPS that tracing may cost


def s4_server(size: int) -> str:
    return f"gateway @{size_label(size)}"


def size_label(size: int) -> str:
    return f"{size // 1000}k" if size % 1000 == 0 else str(size)


@dataclass
class Agg:
    scenario: str
    server: str
    runs: int
    rps: float
    rps_min: float
    rps_max: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    non2xx: int
    errors: int
    requests: int
    cpu_s_per_1k: float
    rss_hwm_mb: float
    wrapped: int
    stages_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    # the gateway's rag_answer_cache_hit_total / _miss_total deltas over the runs (None: not read)
    answer_cache: dict[str, int] | None = None

    @property
    def failed(self) -> bool:
        return self.non2xx > 0 or self.errors > 0

    @property
    def hit_rate(self) -> float | None:
        """Answer-cache hits / lookups over the measured runs; None when not read or no lookups."""
        if not self.answer_cache:
            return None
        looked_up = self.answer_cache["hits"] + self.answer_cache["misses"]
        return self.answer_cache["hits"] / looked_up if looked_up else None


def aggregate(runs: list[dict[str, Any]]) -> dict[tuple[str, str], Agg]:
    """Runs of the same (scenario, server) -> one row: RPS and latency percentiles are the
    median over rounds; counts are summed; CPU per 1k requests is total CPU / total requests."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    counted: dict[tuple[str, str], dict[str, int]] = {}
    for run in runs:
        key = (run["scenario"], run["server"])
        groups.setdefault(key, []).append(run["result"])
        if run.get("answer_cache") is not None:
            total = counted.setdefault(key, {"hits": 0, "misses": 0})
            for k in total:
                total[k] += int(run["answer_cache"].get(k, 0))
    out: dict[tuple[str, str], Agg] = {}
    for key, rs in groups.items():
        requests = sum(r["requests"] for r in rs)
        cpu = sum(r["cpu_s"] for r in rs)
        stages: dict[str, dict[str, float]] = {}
        for name in ("embed", "search", "rerank"):
            vals = [r["stages_ms"][name] for r in rs if r.get("stages_ms", {}).get(name)]
            if vals:
                stages[name] = {q: statistics.median(v[q] for v in vals) for q in ("p50", "p95", "p99")}
        out[key] = Agg(
            scenario=key[0],
            server=key[1],
            runs=len(rs),
            rps=statistics.median(r["rps"] for r in rs),
            rps_min=min(r["rps"] for r in rs),
            rps_max=max(r["rps"] for r in rs),
            p50_ms=statistics.median(r["p50_ms"] for r in rs),
            p95_ms=statistics.median(r["p95_ms"] for r in rs),
            p99_ms=statistics.median(r["p99_ms"] for r in rs),
            non2xx=sum(r["non2xx"] for r in rs),
            errors=sum(r["errors"] for r in rs),
            requests=requests,
            cpu_s_per_1k=cpu / requests * 1000 if requests else 0.0,
            rss_hwm_mb=max(r["rss_hwm_mb"] for r in rs),
            wrapped=sum(r.get("wrapped", 0) for r in rs),
            stages_ms=stages,
            answer_cache=counted.get(key),
        )
    return out


@dataclass
class Target:
    name: str
    measured: str
    ok: bool | None  # None: not measured in this run
    note: str = ""

    @property
    def verdict(self) -> str:
        return "SKIP" if self.ok is None else ("PASS" if self.ok else "MISS")


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def _hits(a: Agg) -> str:
    rate = a.hit_rate
    return "" if rate is None else f"; answer-cache hit rate {rate:.1%}"


def evaluate(
    aggs: dict[tuple[str, str], Agg],
    sizes: list[int],
    full_size: int,
    recall: dict[str, Any] | None = None,
    model_only: dict[str, Any] | None = None,
) -> list[Target]:
    """The issue's target lines, each PASS, MISS or SKIP (not measured). A target that rests on
    a failed scenario (any non-2xx or transport error) is a MISS whatever its numbers say."""
    t: list[Target] = []

    def get(s: str, server: str) -> Agg | None:
        return aggs.get((s, server))

    def failed_note(*rows: Agg) -> str:
        bad = [f"{r.scenario} {r.server}" for r in rows if r.failed]
        return f"scenario failed: {', '.join(bad)}" if bad else ""

    gw, p0, p1 = get("S1", GATEWAY), get("S1", FLOOR), get("S1", NAIVE)
    if gw and p0:
        r = _ratio(gw.rps, p0.rps)
        note = failed_note(gw, p0)
        t.append(
            Target(
                "S1 RPS >= 40% of P0", f"{r:.0%} ({gw.rps:.0f} vs {p0.rps:.0f})", r >= 0.40 and not note, note
            )
        )
    cached = get("S1", CACHED)
    if cached and p0:
        r = _ratio(cached.rps, p0.rps)
        note = failed_note(cached, p0)
        t.append(
            Target(
                "S1 +answer cache RPS >= 40% of P0",
                f"{r:.0%} ({cached.rps:.0f} vs {p0.rps:.0f}){_hits(cached)}",
                r >= 0.40 and not note,
                note,
            )
        )
    if gw and p1:
        r = _ratio(gw.rps, p1.rps)
        note = failed_note(gw, p1)
        t.append(
            Target("S1 RPS >= 3x P1", f"{r:.1f}x ({gw.rps:.0f} vs {p1.rps:.0f})", r >= 3 and not note, note)
        )
    if gw:
        r = _ratio(gw.p99_ms, gw.p50_ms)
        note = failed_note(gw)
        t.append(
            Target(
                "S1 p99 <= 3x p50",
                f"{r:.1f}x (p50 {gw.p50_ms:.1f} ms, p99 {gw.p99_ms:.1f} ms)",
                r <= 3 and not note,
                note,
            )
        )
    gw2, p12 = get("S2", GATEWAY), get("S2", NAIVE)
    if gw2 and p12:
        r = _ratio(gw2.rps, p12.rps)
        note = failed_note(gw2, p12)
        ok = r >= 2 and gw2.p95_ms <= p12.p95_ms and not note
        t.append(
            Target(
                "S2 RPS >= 2x P1 at equal or better p95",
                f"{r:.1f}x ({gw2.rps:.0f} vs {p12.rps:.0f}); p95 {gw2.p95_ms:.0f} vs {p12.p95_ms:.0f} ms",
                ok,
                note,
            )
        )
    if gw2 and model_only:
        # CPU seconds per 1k requests = ms per request
        r = _ratio(gw2.cpu_s_per_1k, model_only["cpu_ms_per_query"])
        note = failed_note(gw2)
        t.append(
            Target(
                f"S2 CPU per request <= {MODEL_CPU_LIMIT:g}x the model's own per query "
                f"(batch {model_only['batch']})",
                f"{r:.2f}x ({gw2.cpu_s_per_1k:.2f} vs {model_only['cpu_ms_per_query']:.2f} ms)",
                r <= MODEL_CPU_LIMIT and not note,
                note,
            )
        )
    small = get("S4", s4_server(min(sizes))) if sizes else None
    big = get("S4", s4_server(max(sizes))) if sizes else None
    if small and big and max(sizes) > min(sizes):
        r = _ratio(big.p50_ms, small.p50_ms)
        note = failed_note(small, big)
        label = f"S4 /rag p50 at {size_label(max(sizes))} <= 2x p50 at {size_label(min(sizes))}"
        if max(sizes) < full_size:
            note = (
                note + "; " if note else ""
            ) + f"quick mode: largest size {size_label(max(sizes))}, not 100k"
        t.append(
            Target(
                label,
                f"{r:.2f}x ({big.p50_ms:.1f} vs {small.p50_ms:.1f} ms)",
                r <= 2 and not failed_note(small, big),
                note,
            )
        )
    else:
        t.append(Target("S4 /rag p50 at 100k <= 2x p50 at 2k", "not measured", None))
    off, on = get("S5", GATEWAY), get("S5", TRACED)
    if off and on:
        cost = 1 - _ratio(on.rps, off.rps)
        note = failed_note(off, on)
        t.append(
            Target(
                f"S5 tracing costs <= {TRACING_COST_LIMIT:.0%} of S1 RPS",
                f"{cost:.0%} ({on.rps:.0f} on vs {off.rps:.0f} off)",
                cost <= TRACING_COST_LIMIT and not note,
                note,
            )
        )
    idle, busy = get("S6", NO_JOB), get("S6", DURING_JOB)
    if idle and busy:
        r = _ratio(busy.p95_ms, idle.p95_ms)
        note = failed_note(idle, busy)
        t.append(
            Target(
                "S6 /rag p95 during an ingestion job <= 2x without",
                f"{r:.2f}x ({busy.p95_ms:.0f} vs {idle.p95_ms:.0f} ms)",
                r <= 2 and not note,
                note,
            )
        )
    on7, off7 = get("S7", CACHED), get("S7", GATEWAY)
    if on7 and off7:
        r = _ratio(on7.rps, off7.rps)
        note = failed_note(on7, off7)
        t.append(
            Target(
                "S7 RPS with the answer cache >= 3x without",
                f"{r:.1f}x ({on7.rps:.0f} vs {off7.rps:.0f}); p95 {on7.p95_ms:.0f} vs {off7.p95_ms:.0f} ms"
                f"{_hits(on7)}",
                r >= 3 and not note,
                note,
            )
        )
    default_rss = max(
        (a.rss_hwm_mb for (s, server), a in aggs.items() if server in (GATEWAY, TRACED)), default=0
    )
    if default_rss:
        t.append(
            Target(
                f"Peak RSS of one gateway worker <= {RSS_LIMIT_MB:.0f} MB "
                f"({size_label(min(sizes or [2000]))} corpus)",
                f"{default_rss:.0f} MB",
                default_rss <= RSS_LIMIT_MB,
            )
        )
    if sizes and max(sizes) > min(sizes):
        big_rss = max(
            (a.rss_hwm_mb for (s, server), a in aggs.items() if server == s4_server(max(sizes))), default=0
        )
        if big_rss:
            t.append(
                Target(
                    f"Peak RSS of one gateway worker <= {RSS_LIMIT_MB:.0f} MB "
                    f"({size_label(max(sizes))} corpus)",
                    f"{big_rss:.0f} MB",
                    big_rss <= RSS_LIMIT_MB,
                )
            )
    if recall:
        biggest = max(recall, key=int)
        for ef, rows in recall[biggest].items():
            for name, r in rows.items():
                t.append(
                    Target(
                        f"S4 recall@10 >= {RECALL_TARGET} at {size_label(int(biggest))}, {name}, ef={ef}",
                        f"{r['recall_mean']:.4f} (worst query {r['recall_min']:.2f})",
                        r["recall_mean"] >= RECALL_TARGET,
                    )
                )
    return t


# ---------------------------------------------------------------- rendering


def recall_queries(recall: dict[str, Any]) -> int:
    for by_ef in recall.values():
        for rows in by_ef.values():
            for r in rows.values():
                return int(r["queries"])
    return 0


def recall_lines(recall: dict[str, Any]) -> list[str]:
    from bench.recall import render

    return render(recall)


def _f(v: float, digits: int = 1) -> str:
    return f"{v:,.{digits}f}"


def render(doc: dict[str, Any]) -> str:
    """The Markdown report of one results document (what the harness writes as JSON)."""
    aggs = aggregate(doc["runs"])
    meta = doc["meta"]
    sizes = meta["sizes"]
    lines = [
        f"## Benchmark {meta['timestamp']} ({'quick' if meta['quick'] else 'full'})",
        "",
        f"Machine: {meta['machine']['cpu_model']}, {meta['machine']['nproc']} CPUs, "
        f"{meta['machine']['ram_gb']:.0f} GB RAM; {meta['note']}",
        f"Runs: {meta['rounds']} round(s) of {meta['duration_s']:g} s per server and scenario, alternating "
        f"servers, after a {meta['warmup_s']:g} s warm-up each. Figures are medians over rounds "
        "(RPS range in brackets when there are several).",
        "",
        "| scenario | server | RPS | p50 ms | p95 ms | p99 ms | non-2xx | errors "
        "| CPU s / 1k req | peak RSS MB | RPS vs P1 | RPS vs P0 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = [s for s in SCENARIOS if any(k[0] == s for k in aggs)]
    for s in order:
        rows = [a for (sc, _), a in aggs.items() if sc == s]
        p1 = aggs.get((s, NAIVE))
        p0 = aggs.get((s, FLOOR))
        for a in rows:
            rps = _f(a.rps, 0)
            if a.runs > 1:
                rps += f" ({a.rps_min:.0f}–{a.rps_max:.0f})"
            vs1 = f"{a.rps / p1.rps:.1f}x" if p1 and p1.rps and a.server != NAIVE else ""
            vs0 = f"{a.rps / p0.rps:.0%}" if p0 and p0.rps and a.server != FLOOR else ""
            name = a.server + (" **FAILED**" if a.failed else "")
            lines.append(
                f"| {s} | {name} | {rps} | {_f(a.p50_ms)} | {_f(a.p95_ms)} | {_f(a.p99_ms)} | {a.non2xx} "
                f"| {a.errors} | {a.cpu_s_per_1k:.3f} | {a.rss_hwm_mb:.0f} | {vs1} | {vs0} |"
            )
    s4 = [aggs[("S4", s4_server(n))] for n in sizes if ("S4", s4_server(n)) in aggs]
    if s4:
        lines += [
            "",
            "S4 growth (wrk, c=" + str(meta.get("s4_concurrency", "")) + "; search = the gateway's own "
            "Server-Timing `search` stage, so it excludes HTTP and embedding):",
            "",
            "| points | /rag p50 ms | /rag p99 ms | search p50 ms | search p99 ms | RPS | peak RSS MB "
            "| peak RSS MB per 1k points | added MB per 1k added points |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        previous: tuple[int, float] | None = None
        for n, a in zip([n for n in sizes if ("S4", s4_server(n)) in aggs], s4, strict=True):
            srch = a.stages_ms.get("search", {})
            # the whole process per 1k points (the model and runtime weigh on small sizes), and
            # what each further 1k points cost over the size before it
            added = "—"
            if previous is not None and n > previous[0]:
                added = f"{(a.rss_hwm_mb - previous[1]) / ((n - previous[0]) / 1000):.2f}"
            lines.append(
                f"| {n:,} | {_f(a.p50_ms)} | {_f(a.p99_ms)} | {_f(srch.get('p50', 0), 2)} "
                f"| {_f(srch.get('p99', 0), 2)} | {_f(a.rps, 0)} | {a.rss_hwm_mb:.0f} "
                f"| {a.rss_hwm_mb / (n / 1000):.2f} | {added} |"
            )
            previous = (n, a.rss_hwm_mb)
    if meta.get("recall"):
        lines += [
            "",
            "S4 recall@10 against exact search on the same shards (bench/recall.py: the gateway's "
            "default ef, " + str(recall_queries(meta["recall"])) + " distinct queries per row):",
            "",
            *recall_lines(meta["recall"]),
        ]
    if meta.get("ingest"):
        lines += ["", *ingest_lines(meta["ingest"])]
    if meta.get("skipped"):
        lines += ["", *[f"Skipped: {s}" for s in meta["skipped"]]]
    off, sampled = aggs.get(("S5", GATEWAY)), aggs.get(("S5", TRACED_SAMPLED))
    if off and sampled:
        lines += [
            "",
            f"S5 at {SAMPLED_RATIO:.0%} sampling (`OTEL_TRACES_SAMPLER=parentbased_traceidratio`, "
            f"`OTEL_TRACES_SAMPLER_ARG={SAMPLED_RATIO:g}`; not a target, the target is about tracing "
            f"every request): tracing cost {1 - _ratio(sampled.rps, off.rps):.0%} of S1's RPS "
            f"({sampled.rps:.0f} vs {off.rps:.0f}).",
        ]
    if meta.get("otlp"):
        o = meta["otlp"]
        lines += ["", f"OTLP receiver got {o['requests']} export requests, {o['bytes']:,} bytes (S5 on)."]
    counted = [a for a in aggs.values() if a.answer_cache is not None]
    if counted:
        lines += [
            "",
            "Answer cache (the gateway's `rag_answer_cache_hit_total` / `_miss_total` deltas over the "
            "measured runs):",
            "",
            *[
                f"- {a.scenario} {a.server}: {a.answer_cache['hits']:,} hits, {a.answer_cache['misses']:,} "
                f"misses, {'no lookups (cache off)' if a.hit_rate is None else f'hit rate {a.hit_rate:.1%}'}"
                for a in counted
                if a.answer_cache is not None
            ],
        ]
    if meta.get("zipf"):
        z = meta["zipf"]
        lines += [
            "",
            f"S7 mix: Zipf s={z['s']:g} over {z['distinct']:,} distinct queries (sampling seed "
            f"{z['seed']}); each round sends the same sample to both gateways"
            + (
                f", after the same {z['warmup_requests']:,} warm-up requests of the mix to each."
                if z.get("warmup_requests")
                else "."
            ),
        ]
    # S7 repeats queries by design; the note is about the distinct-query scenarios
    wraps = [a for a in aggs.values() if a.wrapped and a.server != FLOOR and a.scenario != "S7"]
    if wraps:
        lines += [
            "",
            "Note: distinct-query lists wrapped (some repeats, so some cache hits) for: "
            + ", ".join(f"{a.scenario} {a.server}" for a in wraps),
        ]
    if meta.get("model_only"):
        m = meta["model_only"]
        lines += [
            "",
            f"S2's line, the model alone (bench/modelonly.py: distinct queries embedded in-process in "
            f"batches of {m['batch']}, no server): {m['qps']:,.0f} queries/s, "
            f"{m['cpu_ms_per_query']:.2f} ms CPU per query over {m['queries']:,} queries.",
        ]
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    for t in evaluate(aggs, sizes, meta["full_size"], meta.get("recall"), meta.get("model_only")):
        verdict = t.verdict if not t.note else f"{t.verdict} ({t.note})"
        lines.append(f"| {t.name} | {t.measured} | {verdict} |")
    return "\n".join(lines) + "\n"


def ingest_lines(rounds: list[dict[str, Any]]) -> list[str]:
    """S6's ingestion rates: the job's passages/s while S2's load ran and with no load (the same
    code as the bootstrap: its rate alone), medians over rounds."""
    loaded = statistics.median(r["loaded_per_s"] for r in rounds)
    alone = statistics.median(r["alone_per_s"] for r in rounds)
    out = [
        f"S6 ingestion job ({rounds[0]['passages']:,} passages uploaded per round, cancelled once "
        f"measured): {loaded:.1f} passages/s under S2's load, {alone:.1f} passages/s alone "
        f"(the bootstrap's code path); {_ratio(loaded, alone):.0%} of its rate alone."
    ]
    short = [str(r["round"]) for r in rounds if r.get("ended_early")]
    if short:
        out.append(f"Note: the S6 job ended before its windows did in round(s) {', '.join(short)}.")
    return out


def targets_dicts(doc: dict[str, Any]) -> list[dict[str, Any]]:
    aggs = aggregate(doc["runs"])
    return [
        {**asdict(t), "verdict": t.verdict}
        for t in evaluate(
            aggs,
            doc["meta"]["sizes"],
            doc["meta"]["full_size"],
            doc["meta"].get("recall"),
            doc["meta"].get("model_only"),
        )
    ]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.report RESULTS.json", file=sys.stderr)
        return 2
    print(render(json.loads(Path(args[0]).read_text())), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
