# Sourced by the scripts that fetch Debian packages: sets MIRROR to DEBIAN_MIRROR, else to the mirror this host's
# apt reads its own release's main component from (`apt-cache policy`; run apt-get update first on a new host).
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
MIRROR=${DEBIAN_MIRROR:-$(apt-cache policy 2>/dev/null | awk -v suite="$codename/main" '$3 == suite {print $2; exit}')}
if [ -z "$MIRROR" ]; then
  echo "no Debian mirror in this host's apt sources: run apt-get update, or set DEBIAN_MIRROR" >&2
  exit 1
fi
