#!/usr/bin/env bash
# Installs Docker Compose v2 as a Docker CLI plugin where `docker compose` is missing, from Debian's packages.
#
# Debian bookworm packages only Compose 1.29 (`docker-compose`, Python), which cannot read docker/compose.yaml.
# Debian trixie's `docker-compose` package is Compose v2 (one static Go binary) and runs on bookworm: this script
# downloads that one package from the mirror this host's apt already uses (a private apt state under a temporary
# directory: the host's sources and package lists are left as they are), unpacks it and installs the binary as
# $PLUGIN_DIR/docker-compose (default /usr/local/lib/docker/cli-plugins, where every docker client looks; as a
# user: PLUGIN_DIR=~/.docker/cli-plugins). Needs root for the default directory.
#
#   DOCKER=docker bash docker/install-compose.sh
set -euo pipefail

DOCKER=${DOCKER:-docker}
PLUGIN_DIR=${PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}
SUITE=${COMPOSE_SUITE:-trixie}

if "$DOCKER" compose version >/dev/null 2>&1; then
  echo "already installed: $("$DOCKER" compose version)"
  exit 0
fi

# shellcheck source=docker/stand-ins/debian-mirror.sh
. "$(cd "$(dirname "$0")" && pwd)/stand-ins/debian-mirror.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/parts"
printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' "$MIRROR" "$SUITE" \
  > "$work/sources.list"
apt_private=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=$work/parts"
             -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o "Dir::State::Status=/dev/null"
             -o "APT::Sandbox::User=$(id -un)")  # a private temporary directory: no download sandbox user
echo "downloading docker-compose from $SUITE ($MIRROR)"
apt-get "${apt_private[@]}" update -qq
(cd "$work" && apt-get "${apt_private[@]}" download docker-compose >/dev/null)
dpkg-deb -x "$work"/docker-compose_*.deb "$work/unpacked"
install -D -m 0755 "$work/unpacked/usr/libexec/docker/cli-plugins/docker-compose" "$PLUGIN_DIR/docker-compose"
echo "installed $PLUGIN_DIR/docker-compose: $("$DOCKER" compose version)"
