#!/usr/bin/env bash
# The demo behind `make demo`: bundles, then a pipe graph run as Docker containers (one per pipe) by Luigi.
# Everything lives under .demo/ (its own DISDAT_HOME and a file:// remote); your ~/.disdat is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
BASE_IMAGE=${BASE_IMAGE:-disdat-luigi-base:bookworm}
DEMO=$PWD/.demo
export DISDAT_HOME=$DEMO/home
# The engine `make demo` starts has no bridge network: containers use the host's network.
export DISDAT_RUN_NETWORK_MODE=host
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
dsdt() { echo "\$ dsdt $*"; "$BIN/dsdt" "$@"; }

rm -rf "$DEMO" && mkdir -p "$DEMO/data"
cat > "$DEMO/data/fox.txt" <<'TXT'
The quick brown fox jumps over the lazy dog.
The dog sleeps; the fox runs into the forest.
TXT
cat > "$DEMO/data/hamlet.txt" <<'TXT'
To be, or not to be, that is the question:
Whether 'tis nobler in the mind to suffer
The slings and arrows of outrageous fortune.
TXT

step "A base image without a registry (debootstrap; skipped when it exists)"
bash scripts/build-base-image.sh "$BASE_IMAGE"

step "Bundles: a context, a remote, a versioned bundle of files"
dsdt init
dsdt context demo
dsdt remote shared "file://$DEMO/remote"
dsdt add -t source:demo texts "$DEMO/data"
dsdt commit texts
dsdt ls

step "The image for the pipe classes under pipes/"
dsdt dockerize --base-image "$BASE_IMAGE" pipes

step "Run report.TextReport and its two upstream pipes: three containers, two at a time, only the report pulled"
dsdt run --workers 2 -ot stage:demo texts report report.TextReport --min-len 3

step "The output arrived as a new bundle version, with its lineage"
dsdt ls -v
dsdt cat report
dsdt lineage report

step "Every node left a record and its log on the remote"
dsdt runs
dsdt logs "$("$BIN/dsdt" runs report -n 1 | awk 'NR==2 {print $1}')"

step "The same run again is already complete: nothing runs"
time "$BIN/dsdt" run --workers 2 -ot stage:demo texts report report.TextReport --min-len 3 2>&1 | tail -n 1
