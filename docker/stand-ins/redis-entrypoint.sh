#!/bin/sh
# As in the official image: the server runs without protected mode, which would refuse every client on the
# container network (the network is the boundary; compose publishes no Redis port).
set -e
if [ "${1:-}" = redis-server ]; then
  shift
  exec redis-server --protected-mode no "$@"
fi
exec "$@"
