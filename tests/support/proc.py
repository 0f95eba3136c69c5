"""This checkout's Python in a child process, as an operator runs it: from the repository root,
with none of the RAG_* variables of the test run's own environment (`run_python`); and the
gateway itself, `python -m app` on a loopback port, returned once it answers (`serve_app`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from support.paths import ROOT


def run_python(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """`python ARGS` with `env` as its only RAG_* settings; output captured as text."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("RAG_")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def serve_app(
    port: int, env: dict[str, str], log_path: Path, ready_path: str, timeout_s: float, append: bool = False
) -> subprocess.Popen[bytes]:
    """`python -m app` on 127.0.0.1:`port` with exactly `env`, its output in `log_path` (appended
    to, for a gateway restarted on the same log); returned once `ready_path` answers 200. Raises
    with the log's tail if the process exits first, TimeoutError after `timeout_s`."""
    with log_path.open("ab" if append else "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited: {log_path.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    raise TimeoutError("gateway did not start")
