#!/usr/bin/env bash
# Local stand-ins for the base images the Dockerfiles name, for hosts that cannot reach an image registry (or
# only a Debian mirror and PyPI): each is built only when no image of that tag exists yet.
#
#   python:3.11.14-slim-bookworm   a debootstrap of Debian bookworm (python3 3.11, venv, CA certificates; the
#                                  host's CA bundle, so that downloads during builds trust what the host trusts),
#                                  python at /usr/local/bin as in the official image
#   ghcr.io/astral-sh/uv:0.13.9    /uv and /uvx from uv's PyPI wheel, FROM scratch
#
# With --stack, also the service images of docker/compose.yaml (except Grafana, which Debian does not package),
# each a Dockerfile in docker/stand-ins/ on the Python stand-in with Debian bookworm's package, run the way the
# official image runs it:
#   postgres:17.6-bookworm         PostgreSQL 15 (POSTGRES_USER/PASSWORD/DB, /docker-entrypoint-initdb.d)
#   redis:7.4.5-bookworm           Redis 7.0 (protected mode off, as in the official image)
#   prom/prometheus:v3.5.0         Prometheus 2.42 (entry point /usr/bin/prometheus, wget for the healthcheck)
# Stand-ins carry the official tags so that the files build and run unchanged; they are older versions of the same
# programs. Remove them (docker image rm TAG) once a registry or mirror is reachable, and before you keep data in
# a volume they initialised: PostgreSQL 17 does not read a PostgreSQL 15 data directory.
#
# Needs root (debootstrap), a Docker engine, and a Python with pip (PYTHON, default .venv/bin/python). The Debian
# mirror is the one this host's apt uses (DEBIAN_MIRROR overrides it).
#   DOCKER=docker bash docker/local-base-images.sh [--stack]
set -euo pipefail

DOCKER=${DOCKER:-docker}
PYTHON=${PYTHON:-.venv/bin/python}
STACK=0
[ "${1:-}" = --stack ] && STACK=1
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=docker/stand-ins/debian-mirror.sh
. "$here/stand-ins/debian-mirror.sh"
PYTHON_TAG=python:3.11.14-slim-bookworm
UV_VERSION=0.13.9
UV_TAG=ghcr.io/astral-sh/uv:${UV_VERSION}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
have() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

if ! have "$PYTHON_TAG"; then
  echo "building a stand-in for $PYTHON_TAG from $MIRROR"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$work/rootfs" "$MIRROR" \
    > "$work/debootstrap.log" || { tail -n 20 "$work/debootstrap.log"; exit 1; }
  for name in python python3 python3.11; do ln -sf /usr/bin/python3.11 "$work/rootfs/usr/local/bin/$name"; done
  cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
  tar -C "$work/rootfs" -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV UV_NATIVE_TLS=1' \
    --change 'CMD ["python3"]' - "$PYTHON_TAG"
fi

if ! have "$UV_TAG"; then
  echo "building a stand-in for $UV_TAG from uv's wheel on PyPI"
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_17_x86_64 \
    --python-version 3.11 "uv==${UV_VERSION}" -d "$work/wheel"
  mkdir -p "$work/uv"
  "$PYTHON" -m zipfile -e "$work"/wheel/uv-*.whl "$work/unpacked"
  cp "$work/unpacked/uv-${UV_VERSION}.data/scripts/uv" "$work/unpacked/uv-${UV_VERSION}.data/scripts/uvx" "$work/uv/"
  chmod +x "$work/uv/uv" "$work/uv/uvx"
  printf 'FROM scratch\nCOPY uv uvx /\n' > "$work/uv/Dockerfile"
  "$DOCKER" build --quiet -t "$UV_TAG" "$work/uv"
fi
ready="$PYTHON_TAG, $UV_TAG"

if [ "$STACK" = 1 ]; then
  for pair in postgres=postgres:17.6-bookworm redis=redis:7.4.5-bookworm prometheus=prom/prometheus:v3.5.0; do
    name=${pair%%=*} tag=${pair#*=}
    if ! have "$tag"; then
      echo "building a stand-in for $tag from Debian's $name package"
      DOCKER_BUILDKIT=1 "$DOCKER" build --quiet -t "$tag" -f "$here/stand-ins/$name.Dockerfile" "$here/stand-ins" \
        > "$work/$name.log" 2>&1 || { tail -n 20 "$work/$name.log"; exit 1; }
    fi
    ready="$ready, $tag"
  done
fi
echo "images ready: $ready"
