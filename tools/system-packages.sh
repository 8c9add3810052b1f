#!/usr/bin/env bash
# The Debian packages the suite runs beside Node: better-sqlite3 builds from source (python3,
# make, g++); the etcd store's tests and the HA controllers run a real etcd (etcd-server); the
# benchmark's peer runs on redis-server; partition tests use ip netns (iproute2); the TLS tests
# make certificates with openssl; the Python reference agent runs on Debian's grpcio, its stubs
# made by protoc and grpc_python_plugin (python3-grpc-tools bundles a protoc too old for proto3
# `optional`); the deploy manifests are rendered by kubectl; the web console's browser tests and
# screenshots drive Debian's chromium (playwright-core launches it; no browser is downloaded).
# `npm test` (as its pretest) and .ci/run both run this: it installs what is missing when it can
# (root, apt-get), and otherwise stops at once, printing the one command to run.
set -euo pipefail

missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
# Debian's python3, whatever else is first on the PATH: the Python tests run /usr/bin/python3.
[ -x /usr/bin/python3 ] || missing+=(python3)
need make make
need g++ g++
need git git
need openssl openssl
need redis-server redis-server
need etcd etcd-server
need ip iproute2
need protoc protobuf-compiler
need grpc_python_plugin protobuf-compiler-grpc
# Another package's kubectl may own the path; any kubectl will do.
need kubectl kubernetes-client
# The Argo CD health check (deploy/gitops/argocd-health.lua) is Lua, run by the ShardedJob tests.
need lua5.4 lua5.4
need chromium chromium
if ! /usr/bin/python3 -c 'import grpc, google.protobuf' >/dev/null 2>&1; then missing+=(python3-grpcio python3-protobuf); fi
[ -e /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)

if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing the Debian packages the suite needs: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi
echo "the suite needs Debian packages that are missing; install them with:" >&2
echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
exit 1
