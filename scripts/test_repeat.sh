#!/usr/bin/env bash
# Flake check: clone HEAD into a fresh directory and run the whole suite there N times in a row
# (lint, types and pytest, as `make test` does). Stops at the first failing run and says which.
# The clone shares this checkout's virtualenv, so only the first run pays for the model export.
set -euo pipefail
n="${1:-3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$root/.venv}"
case "$venv" in /*) ;; *) venv="$root/$venv" ;; esac
clone="$(mktemp -d "${TMPDIR:-/tmp}/rag-gateway-repeat.XXXXXX")"
trap 'rm -rf "$clone"' EXIT
git clone --quiet --no-hardlinks "$root" "$clone/repo"
echo "test-repeat: $n runs of the suite on a fresh clone of $(git -C "$root" rev-parse --short HEAD)"
for i in $(seq 1 "$n"); do
  start=$SECONDS
  if ! make -C "$clone/repo" --no-print-directory test VENV="$venv"; then
    echo "test-repeat: run $i of $n FAILED" >&2
    exit 1
  fi
  echo "test-repeat: run $i of $n passed in $((SECONDS - start)) s"
done
echo "test-repeat: $n of $n runs passed"
