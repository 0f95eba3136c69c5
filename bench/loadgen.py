"""The load generators (hey for the hot query, wrk + Lua for distinct bodies), their output
parsers, and the per-process counters read around each run (/proc/<pid>/stat CPU time,
/proc/<pid>/status VmHWM).

The parsers are pure functions over the tools' text output, so they are tested on canned output.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "bodies.lua"
HOT_BODY = '{"q":"test","k":50}'
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class LoadResult:
    """One load-generator run against one server."""

    tool: str
    requests: int  # responses received (any status)
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    non2xx: int  # responses with a status outside 200..299
    errors: int  # requests without a response (connect/read/write/timeout)
    status_counts: dict[str, int] = field(default_factory=dict)
    error_lines: list[str] = field(default_factory=list)
    stages_ms: dict[str, Any] = field(default_factory=dict)
    wrapped: int = 0  # wrk: times a thread ran out of distinct bodies and started over
    cpu_s: float = 0.0  # server process CPU time (user + system) spent during the run
    cpu_s_per_1k: float = 0.0
    rss_hwm_mb: float = 0.0  # server process VmHWM after the run

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- hey


def hey_command(url: str, duration_s: float, concurrency: int = 20, body: str = HOT_BODY) -> list[str]:
    """The README's hot-query load test, with the JSON content type."""
    return [
        "hey",
        "-z",
        f"{duration_s:g}s",
        "-c",
        str(concurrency),
        "-m",
        "POST",
        "-T",
        "application/json",
        "-d",
        body,
        url,
    ]


_HEY_NUM = r"([0-9.]+)"


def parse_hey(text: str) -> LoadResult:
    def num(pattern: str) -> float:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else 0.0

    total_s = num(rf"Total:\s+{_HEY_NUM} secs")
    pct: dict[int, float] = {}
    for p, secs in re.findall(r"^\s+(\d+)%+ in ([0-9.]+) secs", text, flags=re.M):
        pct[int(p)] = float(secs) * 1000
    status: dict[str, int] = {}
    section = text.split("Status code distribution:", 1)
    if len(section) == 2:
        for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", section[1].split("Error distribution:")[0]):
            status[code] = status.get(code, 0) + int(n)
    error_lines: list[str] = []
    errors = 0
    section = text.split("Error distribution:", 1)
    if len(section) == 2:
        for n, line in re.findall(r"^\s+\[(\d+)\]\s+(.*)$", section[1], flags=re.M):
            errors += int(n)
            error_lines.append(f"[{n}] {line.strip()}")
    requests = sum(status.values())
    non2xx = sum(n for code, n in status.items() if not 200 <= int(code) <= 299)
    # hey leaves out the percentiles it has no sample for (a handful of slow responses);
    # the slowest response bounds them
    slowest_ms = num(rf"Slowest:\s+{_HEY_NUM} secs") * 1000
    for p in (50, 95, 99):
        if p not in pct and requests:
            pct[p] = slowest_ms
    return LoadResult(
        tool="hey",
        requests=requests,
        seconds=total_s,
        rps=requests / total_s if total_s else 0.0,
        p50_ms=pct.get(50, 0.0),
        p95_ms=pct.get(95, 0.0),
        p99_ms=pct.get(99, 0.0),
        non2xx=non2xx,
        errors=errors,
        status_counts=status,
        error_lines=error_lines,
    )


# ---------------------------------------------------------------- wrk


def wrk_command(
    url: str,
    bodies: Path,
    duration_s: float,
    connections: int = 20,
    threads: int = 2,
    timings: bool = False,
) -> list[str]:
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        str(bodies),
        "timings" if timings else "-",
        str(threads),
    ]


def parse_wrk(text: str) -> LoadResult:
    m = re.search(r"^BENCH_JSON (\{.*\})\s*$", text, flags=re.M)
    if m is None:
        raise ValueError(f"no BENCH_JSON line in wrk output:\n{text[-2000:]}")
    d = json.loads(m.group(1))
    seconds = d["duration_us"] / 1e6
    lat = d["latency_us"]
    e = d["errors"]
    # wrk counts a status >= 400 as an error too; ours is the exact non-2xx count
    transport = e["connect"] + e["read"] + e["write"] + e["timeout"]
    return LoadResult(
        tool="wrk",
        requests=d["requests"],
        seconds=seconds,
        rps=d["requests"] / seconds if seconds else 0.0,
        p50_ms=lat["p50"] / 1000,
        p95_ms=lat["p95"] / 1000,
        p99_ms=lat["p99"] / 1000,
        non2xx=d["non2xx"],
        errors=transport,
        error_lines=[f"{k}: {v}" for k, v in e.items() if v and k != "status"],
        stages_ms={k: v for k, v in d["stages_ms"].items() if v is not None},
        wrapped=d["wrapped"],
    )


# ---------------------------------------------------------------- a fixed number of requests


def send_each(
    url: str, bodies: list[str], concurrency: int, timeout_s: float = 60.0, total_s: float = 900.0
) -> tuple[int, list[str]]:
    """POST every body of `bodies` to `url`/rag exactly once, over `concurrency` connections: a
    warm-up measured in requests, not seconds (hey and wrk run for a time). At most `timeout_s`
    per request and `total_s` in all; no proxy from the environment (as wrk and hey). Returns the
    number of non-2xx answers and, for each request without an answer, what went wrong (those
    still unanswered at the deadline, in one line)."""

    async def run() -> tuple[int, list[str]]:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        headers = {"content-type": "application/json"}
        pending = iter(bodies)
        non2xx = answered = 0
        errors: list[str] = []
        client = httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout_s, trust_env=False)
        async with client:

            async def worker() -> None:
                nonlocal non2xx, answered
                for body in pending:  # one iterator shared by the workers: each body once
                    try:
                        r = await client.post("/rag", content=body, headers=headers)
                    except httpx.HTTPError as exc:
                        errors.append(f"{type(exc).__name__}: {exc}")
                        continue
                    answered += 1
                    non2xx += not 200 <= r.status_code <= 299

            try:
                await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), total_s)
            except TimeoutError:
                left = len(bodies) - answered - len(errors)
                errors.append(
                    f"stopped after {total_s:g} s: {left} of {len(bodies)} bodies without an answer"
                )
        return non2xx, errors

    return asyncio.run(run())


# ---------------------------------------------------------------- gateway metrics


_ANSWER_CACHE = re.compile(r"^rag_answer_cache_(hit|miss)_total(?:\{[^}]*\})? ([0-9.eE+-]+)$", re.M)


def answer_cache_counts(metrics_text: str) -> dict[str, int]:
    """`rag_answer_cache_hit_total` and `_miss_total` from a gateway's /metrics text (summed over
    label sets, if any): {"hits": .., "misses": ..}."""
    out = {"hits": 0, "misses": 0}
    for kind, value in _ANSWER_CACHE.findall(metrics_text):
        out["hits" if kind == "hit" else "misses"] += int(float(value))
    return out


# ---------------------------------------------------------------- process counters


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_hwm_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_load(cmd: list[str], pid: int, timeout_s: float) -> LoadResult:
    """Run one load generator against the server `pid`; attach its CPU and memory counters."""
    cpu0 = cpu_seconds(pid)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    cpu = cpu_seconds(pid) - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {proc.stderr[-2000:]}")
    result = parse_hey(proc.stdout) if cmd[0] == "hey" else parse_wrk(proc.stdout)
    result.cpu_s = round(cpu, 3)
    result.cpu_s_per_1k = round(cpu / result.requests * 1000, 4) if result.requests else 0.0
    result.rss_hwm_mb = round(rss_hwm_mb(pid), 1)
    return result
