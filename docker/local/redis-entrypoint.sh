#!/bin/sh
# As the official redis image does: `redis-server [flags]` without a config file listens on every
# interface with protected mode off (the compose network is the boundary).
set -e
if [ "$1" = "redis-server" ]; then
    shift
    exec redis-server --protected-mode no "$@"
fi
exec "$@"
