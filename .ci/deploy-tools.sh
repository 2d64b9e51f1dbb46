#!/usr/bin/env bash
# Install the Debian packages the deployment tests run for real: `prometheus` (ships promtool
# and the prometheus server) and `docker-compose` (v1, validates docker-compose.yml; the
# `docker compose` plugin is not packaged for these machines).
# Idempotent: packages already installed are skipped and apt-get update runs at most once.
set -euo pipefail

PACKAGES=(prometheus docker-compose)

missing=()
for pkg in "${PACKAGES[@]}"; do
  # dpkg-query prints "install ok installed" only for a fully installed package.
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "deploy-tools: already installed: ${PACKAGES[*]}"
  exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null; then
    echo "deploy-tools: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
  SUDO=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
echo "deploy-tools: installing ${missing[*]}"
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

for tool in promtool prometheus docker-compose; do
  command -v "$tool" >/dev/null || { echo "deploy-tools: $tool missing after install" >&2; exit 1; }
done
echo "deploy-tools: ok"
