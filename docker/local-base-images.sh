#!/usr/bin/env bash
# Local stand-ins for the base images the Dockerfiles name, for hosts that cannot reach an image registry (or
# only a Debian mirror and PyPI): each is built only when no image of that tag exists yet.
#
#   python:3.11.14-slim-bookworm   a debootstrap of Debian bookworm (python3 3.11, venv, CA certificates; the
#                                  host's CA bundle, so that downloads during builds trust what the host trusts),
#                                  python at /usr/local/bin as in the official image
#   ghcr.io/astral-sh/uv:0.13.9    /uv and /uvx from uv's PyPI wheel, FROM scratch
#
# Needs root (debootstrap), a Docker engine, and a Python with pip (PYTHON, default .venv/bin/python).
#   DOCKER=docker DEBIAN_MIRROR=http://deb.debian.org/debian bash docker/local-base-images.sh
set -euo pipefail

DOCKER=${DOCKER:-docker}
PYTHON=${PYTHON:-.venv/bin/python}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
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
echo "base images ready: $PYTHON_TAG, $UV_TAG"
