#!/usr/bin/env bash
# Install Meetecho's WHEP server for Janus (the npm package janus-whep-server, pinned) into
# build/janus-whep, for the Janus tests to run in front of Janus's VideoRoom (tests/janus.py).
# Needs node and npm (Debian's nodejs and npm; scripts/bootstrap.sh --servers installs them),
# the npm registry, and a C++ compiler for janode's one native module. Prints the path of the module to import. Running it again reuses the
# installed copy.
#
# Exit codes: 0 installed, 1 npm failed, 2 node or npm is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."

version=1.1.0  # speaks server-offer WHEP (a 406 with Janus's offer) for VideoRoom subscribers
for tool in node npm; do
  if ! command -v "$tool" >/dev/null; then
    echo "build-janus-whep: $tool is not installed: install nodejs npm" >&2
    exit 2
  fi
done
out=build/janus-whep
module=$out/node_modules/janus-whep-server/src/whep.js
if [ ! -f "$module" ] || [ ! -f "$out/node_modules/unix-dgram/build/Release/unix_dgram.node" ] || ! grep -q "\"version\": \"$version\"" "$out/node_modules/janus-whep-server/package.json"; then
  mkdir -p "$out"
  # Install scripts are run only for the one package that needs a build: janode imports
  # unix-dgram (its Unix-socket transport, unused here) as it loads, a native module.
  npm install --prefix "$out" --no-audit --no-fund --ignore-scripts --loglevel=error \
    "janus-whep-server@$version" >&2
  npm rebuild --prefix "$out" --loglevel=error unix-dgram >&2
fi
echo "$PWD/$module"
