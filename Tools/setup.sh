#!/usr/bin/env bash
# Installs what AmusedKit needs on Debian/Ubuntu: the C libraries (as -dev packages) and pkg-config.
# Swift 6.3 itself is expected on PATH. The PyTorch reference for Tools/ is separate (see README).
set -euo pipefail
packages=(libhdf5-dev libzstd-dev libjson-c-dev libopenblas-dev libjpeg-dev zlib1g-dev pkg-config)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "AmusedKit dependencies present: ${packages[*]}" >&2
