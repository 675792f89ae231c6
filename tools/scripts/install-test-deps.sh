#!/usr/bin/env bash
# Installs everything `make test` needs on a fresh Debian machine with Rust.
set -euo pipefail
need=()
command -v kcat >/dev/null || need+=(kcat)
command -v cmake >/dev/null || need+=(cmake)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
