#!/usr/bin/env bash
# Installs dependencies, builds the simd-r-drive CLI, and shows on a scratch
# store what simdr is for: binary and large values streamed in constant
# memory, key names, import/export of a tree, a file written by the Rust
# crate read as is, and a write killed with kill -9 recovered on the next
# open. Every command is printed as it can be pasted into a shell.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

echo "== dependencies (scripts/deps.sh: installs missing Debian packages, the first run only)"
bash scripts/deps.sh
echo "== building build/release/cli/simd-r-drive"
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
# cmake's own progress lines ("[ 40%] Building C object ..."), indented
cmake --build build/release -j"$(nproc)" --target simd-r-drive 2>&1 | sed -u 's/^/   /'
cli_dir=$root/build/release/cli

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export PATH="$cli_dir:$PATH"

# Prints a command the way it can be pasted (arguments with other than
# plain characters in single quotes), then runs it.
show() {
  local line="" arg
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_./:=+-]+$ ]]; then
      line+="$arg "
    else
      line+="'${arg//\'/\'\\\'\'}' "
    fi
  done
  echo "\$ ${line% }"
  "$@"
}
# The same for a shell pipeline given as one string.
show_sh() {
  echo "\$ $1"
  bash -c "$1"
}

echo
echo "== The commands below run in a scratch folder (removed at the end). To paste them, first:"
echo "   export PATH=\"$cli_dir:\$PATH\"; cd \"\$(mktemp -d)\""
echo
echo "-- text values"
show simd-r-drive demo.bin write greeting 'hello, world'
show simd-r-drive demo.bin read greeting
echo
echo

echo "-- a binary value: every byte comes back as written"
show_sh "head -c 1000000 /dev/urandom > photo.bin"
show_sh "simd-r-drive demo.bin write photo.bin < photo.bin"
show_sh "simd-r-drive demo.bin read photo.bin | cmp - photo.bin && echo identical"
echo

echo "-- a large value streamed in and out in constant memory (200 MB)"
show_sh "yes 'a line of a large log' | head -c 200M | simd-r-drive demo.bin write big.log"
show_sh "simd-r-drive demo.bin read big.log | wc -c"
show simd-r-drive demo.bin list
echo

echo "-- a tree in and out: names are kept, so export restores it"
show_sh "mkdir -p site/css && echo '<h1>hi</h1>' > site/index.html && echo 'h1{}' > site/css/main.css"
show simd-r-drive site.bin import site
show simd-r-drive site.bin list
show simd-r-drive site.bin export restored
show_sh "diff -r site restored && echo 'restored tree is identical'"
echo

echo "-- kill -9 in the middle of a write: the next open recovers"
show mkfifo feed
echo "\$ (head -c 50M /dev/urandom; exec sleep 30) > feed &"
(head -c 50M /dev/urandom; exec sleep 30) > feed &
feeder=$!
echo "\$ simd-r-drive demo.bin write unfinished < feed &  sleep 1; kill -9 \$!"
simd-r-drive demo.bin write unfinished < feed &
writer=$!
sleep 1
kill -9 "$writer"
wait "$writer" 2>/dev/null || true
kill "$feeder" 2>/dev/null || true
wait "$feeder" 2>/dev/null || true
show_sh "ls -l demo.bin"
show_sh "simd-r-drive demo.bin check || true"
show simd-r-drive demo.bin write after-crash 'the store takes writes again'
show simd-r-drive demo.bin read greeting
echo
show_sh "simd-r-drive demo.bin read unfinished || true"
show simd-r-drive demo.bin check
echo

echo "-- a file written by the Rust crate simd-r-drive, read as is"
interop=$root/../shared/interop
if [ -f "$interop/head_basic.bin" ] && [ -f "$interop/head_basic.json" ]; then
  cp "$interop/head_basic.bin" rust.bin
  key=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(next(k["key"] for k in m["keys"] if k["state"] == "present"))' "$interop/head_basic.json")
  echo "(copied from $interop/head_basic.bin, written by $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["writer"])' "$interop/head_basic.json"))"
  show simd-r-drive rust.bin info
  show_sh "simd-r-drive rust.bin read $(printf '%q' "$key") | od -An -tx1 | head -n 2"
  show simd-r-drive rust.bin check
else
  echo "(skipped: no ../shared/interop/ folder beside this clone with files written by the Rust crate)"
fi
echo

echo "-- delete and compact"
show simd-r-drive demo.bin delete big.log
show simd-r-drive demo.bin info
show simd-r-drive demo.bin compact
show simd-r-drive demo.bin info
echo
echo "demo finished; the scratch folder $work is removed"
