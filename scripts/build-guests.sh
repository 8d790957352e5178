#!/usr/bin/env bash
# Builds the JavaScript and Python guests (guests/js, guests/python) into
# guests/target/polyglot/{js,python}.wasm. The Rust guests are built by the
# tests' build script. Installs the pinned toolchains on first use:
# componentize-py from PyPI into a venv, componentize-js from npm into
# guests/js/node_modules. A guest is rebuilt only when its sources or the WIT change.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=guests/target/polyglot
tools=${FLOWFABRIC_TOOLS_DIR:-/var/tmp/flowfabric-tools}
mkdir -p "$out" "$tools"

# Rebuild `lang` unless the digest of its inputs matches the last build's.
stale() {
  local lang=$1; shift
  local digest
  digest=$(cat "$@" wit/*.wit | sha256sum | cut -d' ' -f1)
  if [ -f "$out/$lang.wasm" ] && [ "$(cat "$out/$lang.digest" 2>/dev/null)" = "$digest" ]; then
    return 1
  fi
  echo "$digest" >"$out/$lang.digest.new"
}

if stale python guests/python/*.py $(find guests/python/wit -name '*.wit' | sort); then
  py=$tools/componentize-py-0.25.1
  if [ ! -x "$py/bin/componentize-py" ]; then
    python3 -m venv "$py"
    "$py/bin/pip" install -q componentize-py==0.25.1
  fi
  # The Python world (guests/python/wit) with the task contract as a dependency.
  pywit=$out/python-wit
  rm -rf "$pywit" && cp -r guests/python/wit "$pywit"
  mkdir -p "$pywit/deps/task" && cp wit/task.wit "$pywit/deps/task/"
  "$py/bin/componentize-py" -d "$pywit" -w task-python componentize -p guests/python app \
    -o "$out/python.wasm" >/dev/null
  mv "$out/python.digest.new" "$out/python.digest"
  echo "built $out/python.wasm"
fi

if stale js guests/js/*.js guests/js/*.mjs guests/js/package-lock.json guests/js/wit/*.wit \
  guests/python/wit/deps/{config,filesystem,io,clocks}/*.wit; then
  (cd guests/js && { [ -d node_modules/@bytecodealliance/componentize-js ] || npm ci -s --no-audit --no-fund; })
  # The JS world (guests/js/wit) with the task contract and wasi:config beside it.
  jswit=$out/js-wit
  rm -rf "$jswit" && mkdir -p "$jswit/deps/task"
  cp guests/js/wit/world.wit "$jswit/" && cp wit/task.wit "$jswit/deps/task/"
  for dep in config filesystem io clocks; do cp -r "guests/python/wit/deps/$dep" "$jswit/deps/"; done
  (cd guests/js && node build.mjs task.js "$root/$out/js.wasm" "$root/$jswit" >/dev/null)
  mv "$out/js.digest.new" "$out/js.digest"
  echo "built $out/js.wasm"
fi
