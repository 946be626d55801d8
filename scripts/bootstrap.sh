#!/usr/bin/env bash
# Install the project and its Python dependencies into .venv, from a fresh clone.
#
#   scripts/bootstrap.sh            the package, its runtime and developer dependencies
#   scripts/bootstrap.sh --servers  also the Debian packages the integration tests run
#                                   against (needs root and apt; CI passes it)
set -euo pipefail
cd "$(dirname "$0")/.."

servers=0
for arg in "$@"; do
  case "$arg" in
    --servers) servers=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "bootstrap: unknown option $arg" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "bootstrap: needs Python 3.11 or newer (set PYTHON=...)" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
# constraints.txt: the exact versions the suite last passed on, so every clone installs them.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'

if [ "$servers" = 1 ]; then
  # Real servers for the integration tests, from Debian's packages. None is started here:
  # each test starts its own on loopback and stops it by pid.
  packages=(prometheus prometheus-pushgateway nginx libnginx-mod-rtmp ffmpeg chromium)
  if [ ${#packages[@]} -gt 0 ]; then
    missing=()
    for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
      echo "bootstrap: installing ${missing[*]}" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
  fi
fi
echo "bootstrap: ready (.venv/bin/qoe)" >&2
