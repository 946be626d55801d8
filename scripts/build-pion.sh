#!/usr/bin/env bash
# Build the pion/webrtc WHIP/WHEP forwarder the tests compare the probes through
# (tests/pion/forwarder.go) into build/pion/forwarder, offline, from Debian's packages
# golang-go and golang-github-pion-webrtc.v3-dev (scripts/bootstrap.sh --servers installs
# them). Prints the binary's path. Running it again rebuilds from Go's cache in build/pion.
#
# Exit codes: 0 built, 1 the build failed, 2 Go or pion is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."

gocode=/usr/share/gocode
if ! command -v go >/dev/null; then
  echo "build-pion: go is not installed: install golang-go golang-github-pion-webrtc.v3-dev" >&2
  exit 2
fi
if [ ! -f "$gocode/src/github.com/pion/webrtc/go.mod" ]; then
  echo "build-pion: pion/webrtc v3 is not installed: install golang-github-pion-webrtc.v3-dev" >&2
  exit 2
fi

out=build/pion
# Debian installs pion/webrtc v3 under github.com/pion/webrtc, without the /v3 its imports
# name. The go command drops that /v3 ("minimal module compatibility") only for a package
# inside a GOPATH with a go.mod beside it, so the forwarder is built from a copy in one.
src=$out/gopath/src/forwarder
mkdir -p "$src"
cp tests/pion/forwarder.go tests/pion/go.mod "$src/"
# CGO_ENABLED=0: pure Go, so no C compiler is needed (golang-go only recommends one).
GOPATH="$PWD/$out/gopath:$gocode" GO111MODULE=off GOFLAGS='' CGO_ENABLED=0 GOCACHE="$PWD/$out/cache" \
  go build -o "$out/forwarder" forwarder
echo "$PWD/$out/forwarder"
