#!/usr/bin/env bash
# Build the gateway image with podman from the Dockerfile as it is, on a machine without an image
# registry or a package index: the local base image (container_base.sh) as PYTHON_IMAGE and the
# host-made wheelhouse (container_wheelhouse.sh) mounted at /wheels for pip. The build runs
# without a network, so a wheel missing from the wheelhouse fails it instead of being fetched.
#
#   bash scripts/container_build.sh [TAG]      # default rag-gateway:dev
#
# --format docker keeps the HEALTHCHECK (the OCI image format has no field for it). Layers are
# cached in the podman image store: an unchanged tree rebuilds in seconds.
set -euo pipefail
# shellcheck source=scripts/container_common.sh
source "$(dirname "$0")/container_common.sh"
cd "$ROOT"

TAG="${1:-rag-gateway:dev}"
need_podman
base="$(bash scripts/container_base.sh)"
wheels="$(bash scripts/container_wheelhouse.sh)"
log "building $TAG from $base"
podman build --format docker --network none --layers \
    --volume "$wheels:/wheels:ro" \
    --build-arg PYTHON_IMAGE="$base" \
    --build-arg PIP_NO_INDEX=1 \
    --build-arg PIP_FIND_LINKS=/wheels \
    -t "$TAG" -f Dockerfile .
podman image inspect --format '{{.Size}}' "$TAG" | awk -v t="$TAG" '{printf "%s: %.0f MB\n", t, $1 / 1e6}' >&2
