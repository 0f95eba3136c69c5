#!/usr/bin/env bash
# The compose stack (docker/docker-compose.yml) with podman, where no image registry is reachable:
# docker/docker-compose.podman.yml overrides only what cannot be had (see its header).
#
#   bash scripts/container_stack.sh images           # base, gateway, redis and prometheus images
#   bash scripts/container_stack.sh compose ARGS...  # podman-compose -f ... -f ... ARGS
#   e.g. compose up -d; compose ps; compose down -v
#
# podman-compose (PyPI) is installed once into the container cache directory (its own folder,
# keyed by version); Debian's 1.0 predates the !reset/!override tags the override uses.
set -euo pipefail
# shellcheck source=scripts/container_common.sh
source "$(dirname "$0")/container_common.sh"
cd "$ROOT"

PODMAN_COMPOSE_VERSION=1.6.0
PYTHON="${PYTHON:-python3}"

podman_compose() {
    local dir="$CACHE_DIR/podman-compose-$PODMAN_COMPOSE_VERSION"
    if [[ ! -f "$dir/.complete" ]]; then
        rm -rf "$dir"
        "$PYTHON" -m pip install -q --disable-pip-version-check --target "$dir" \
            "podman-compose==$PODMAN_COMPOSE_VERSION" >&2
        touch "$dir/.complete"
    fi
    PYTHONPATH="$dir" "$PYTHON" -m podman_compose "$@"
}

case "${1:-}" in
    images)
        need_podman
        base="$(bash scripts/container_base.sh)"
        bash scripts/container_build.sh rag-gateway:dev
        for name in redis prometheus; do
            log "building localhost/rag-gateway-$name:bookworm"
            podman build -q --format docker --build-arg BASE_IMAGE="$base" \
                -t "localhost/rag-gateway-$name:bookworm" -f "docker/local/$name.Containerfile" docker/local >/dev/null
        done
        ;;
    compose)
        shift
        podman_compose -f docker/docker-compose.yml -f docker/docker-compose.podman.yml "$@"
        ;;
    *)
        echo "usage: $0 images | compose ARGS..." >&2
        exit 2
        ;;
esac
