#!/usr/bin/env bash
# Installs everything `make test` needs on a fresh Debian machine with Rust:
#   - kcat (Debian's 1.7.1 / librdkafka 2.0.2) and cmake (to build librdkafka for the rdkafka crate)
#   - a Python venv at ./.venv with the pinned packages of tools/tests/py/requirements.txt
# Idempotent and fast when everything is present: apt runs only for a missing tool, pip only
# when the requirements file differs from the stamp left by the last successful install.
set -euo pipefail
cd "$(dirname "$0")/../.."

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

need=()
command -v kcat >/dev/null || need+=(kcat)
command -v cmake >/dev/null || need+=(cmake)
command -v python3 >/dev/null || need+=(python3)
if command -v python3 >/dev/null && ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  need+=(python3-venv)
fi
# librdkafka's cmake build (rdkafka crate, feature cmake-build) needs a C/C++ toolchain.
command -v c++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
# rdkafka-sys 4.10 (librdkafka 2.12.1) includes <curl/curl.h> under `#ifdef WITH_OAUTHBEARER_OIDC`,
# which its cmake config defines to 0, so the header must exist even though curl is not linked.
[ -f /usr/include/curl/curl.h ] || [ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || need+=(libcurl4-openssl-dev)
if ((${#need[@]})); then
  echo "install-test-deps: apt-get install ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

VENV=.venv
REQ=tools/tests/py/requirements.txt
STAMP=$VENV/.requirements.stamp
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && cmp -s "$REQ" "$STAMP"; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "install-test-deps: creating $VENV"
  python3 -m venv "$VENV"
fi
echo "install-test-deps: pip install -r $REQ"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
cp "$REQ" "$STAMP"
