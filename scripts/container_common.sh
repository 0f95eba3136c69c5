# Shared by the container scripts (sourced, not run). Sets:
#   CACHE_DIR        where the wheelhouse is cached between runs (outside the repository)
#   CONTAINERS_CONF  a containers.conf of our own: runc as the runtime (crun cannot run on hosts
#                    with hybrid cgroups) and explicit ulimits (the defaults fail where raising
#                    limits is not allowed); the system's containers.conf is left alone
# and the helpers log, digest and need_podman.
# shellcheck shell=bash

# shellcheck disable=SC2034  # used by the scripts that source this file
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${RAG_CONTAINER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rag-gateway-container}"
mkdir -p "$CACHE_DIR"

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
digest() { cat "$@" | sha256sum | cut -c1-16; }

if [[ -z "${CONTAINERS_CONF:-}" ]]; then
    CONTAINERS_CONF="$CACHE_DIR/containers.conf"
    cat >"$CONTAINERS_CONF.tmp" <<'EOF'
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
runtime = "runc"
EOF
    mv "$CONTAINERS_CONF.tmp" "$CONTAINERS_CONF"
fi
export CONTAINERS_CONF

# The Debian packages the container part needs, installed when missing.
need_podman() {
    local missing="" sudo=""
    [[ "$(id -u)" == 0 ]] || sudo=sudo
    command -v podman >/dev/null || missing="$missing podman"
    command -v runc >/dev/null || missing="$missing runc"
    command -v debootstrap >/dev/null || missing="$missing debootstrap"
    command -v hey >/dev/null || missing="$missing hey"
    if [[ -n "$missing" ]]; then
        log "installing:$missing"
        # shellcheck disable=SC2086  # one word per package
        $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
    fi
}
