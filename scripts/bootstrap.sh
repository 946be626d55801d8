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
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "bootstrap: unknown option $arg" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "bootstrap: needs Python 3.11 or newer (set PYTHON=...)" >&2
  exit 2
fi
# One line per step on stderr: the install is quiet and takes a minute or more, and a
# silent minute reads as a hang.
step() { echo "bootstrap: $*" >&2; }

if [ -x .venv/bin/python ]; then
  step "using the existing .venv"
else
  step "creating .venv with $("$python" -V 2>&1)"
  "$python" -m venv .venv
fi
# constraints.txt: the exact versions the suite last passed on, so every clone installs them.
step "installing qoe and its Python packages at the versions in constraints.txt (a minute or two)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'

if [ "$servers" = 1 ]; then
  # Real servers for the integration tests, from Debian's packages. None is started here:
  # each test starts its own on loopback and stops it by pid.
  packages=(prometheus prometheus-pushgateway nginx libnginx-mod-rtmp ffmpeg chromium coturn janus iproute2
            golang-go golang-github-pion-webrtc.v3-dev nodejs g++ make)
  if [ ${#packages[@]} -gt 0 ]; then
    missing=()
    for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    # NodeSource's nodejs, where a machine has it, carries its own npm and conflicts with
    # Debian's: Debian's npm is asked for only when there is no npm at all.
    command -v npm >/dev/null || missing+=(npm)
    if [ ${#missing[@]} -gt 0 ]; then
      step "installing Debian packages: ${missing[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      step "Debian packages already installed: ${packages[*]}"
    fi
  fi
fi
step "ready: try .venv/bin/qoe demo (the embedded room and three viewers, in one process)"
