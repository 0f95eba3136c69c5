#!/usr/bin/env bash
# A local Python 3.11 base image for the Dockerfile's PYTHON_IMAGE, for machines that reach the
# Debian mirror but no image registry: Debian bookworm (debootstrap --variant=minbase) with
# Debian's python3.11, venv and pip, made to behave like python:3.11-slim-bookworm for what the
# Dockerfile uses (`python`, `pip`, system-wide pip installs in the build stages).
#
#   bash scripts/container_base.sh        # prints the image name; builds it when missing
#
# The tag carries a digest of this script, so a changed package list builds a new image and an
# unchanged one is reused from the podman image store (about 1 min to build, 0 s to reuse).
set -euo pipefail
# shellcheck source=scripts/container_common.sh
source "$(dirname "$0")/container_common.sh"

PACKAGES="passwd,python3,python3-venv,python3-pip,python-is-python3"
IMAGE="localhost/rag-gateway-base:py311-bookworm-$(digest "$0")"

if podman image exists "$IMAGE"; then
    echo "$IMAGE"
    exit 0
fi
need_podman
rootfs="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT
log "debootstrap bookworm ($PACKAGES) into $rootfs"
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$rootfs" >"$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"
# As in the python images: pip may install into the system interpreter (build stages only use it)
rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
tar -C "$rootfs" -c . | podman import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    - "$IMAGE" >/dev/null
log "built $IMAGE"
echo "$IMAGE"
