#!/usr/bin/env bash
# Installs dependencies, builds the library and the simd-r-drive CLI, and runs
# the CLI on a demo store: write, read, info, metadata, list, delete, compact, check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/release -j"$(nproc)" >/dev/null
cli=build/release/cli/simd-r-drive
store=$(mktemp -d)/demo.bin
run() { echo "\$ simd-r-drive demo.bin $*"; "$cli" "$store" "$@"; }
run write greeting "hello, world"
run write user:1 '{"name":"ada"}'
printf 'streamed from stdin\n' | "$cli" "$store" write piped && echo "\$ printf ... | simd-r-drive demo.bin write piped"
run read greeting; echo
run read piped
run write greeting "hello again"
run delete user:1
run info
run metadata greeting
run list
run compact
run info
run check
