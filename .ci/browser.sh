#!/usr/bin/env bash
# Install Debian's Chromium for the web console's browser tests (tests/service/console/).
# Playwright drives it at /usr/bin/chromium; no browser is ever downloaded (`playwright install`
# cannot reach its CDN here). Idempotent: skipped when Chromium is already installed.
set -euo pipefail

if command -v chromium >/dev/null; then
  echo "browser: $(chromium --version 2>/dev/null || echo chromium) already installed"
  exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null; then
    echo "browser: need root (or sudo) to install chromium" >&2
    exit 1
  fi
  SUDO=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
echo "browser: installing chromium"
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq chromium
command -v chromium >/dev/null || { echo "browser: chromium missing after install" >&2; exit 1; }
