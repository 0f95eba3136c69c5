"""This checkout's Python in a child process, as an operator runs it: from the repository root,
with none of the RAG_* variables of the test run's own environment."""

from __future__ import annotations

import os
import subprocess
import sys

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
