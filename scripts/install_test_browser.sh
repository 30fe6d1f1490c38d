#!/usr/bin/env bash
# Install Debian's chromium for tests/test_viewer.py (headless, software WebGL via SwiftShader).
#
# Idempotent and quiet: does nothing when chromium is already installed (or $SPLATLAB_CHROMIUM
# points at a browser); otherwise runs apt-get (as root, or through sudo -n) and prints only
# on failure. Targets Debian (bookworm and later); on Ubuntu the `chromium` apt package is a
# snap shim, so install a browser yourself and set SPLATLAB_CHROMIUM=/path/to/chrome.
set -euo pipefail

if [ -n "${SPLATLAB_CHROMIUM:-}" ] && [ -x "${SPLATLAB_CHROMIUM}" ]; then
    exit 0
fi
if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_test_browser.sh: apt-get not found; install chromium yourself and set SPLATLAB_CHROMIUM" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        echo "install_test_browser.sh: must run as root (or with passwordless sudo) to apt-get install chromium" >&2
        exit 1
    fi
fi

log="$(mktemp -t install_test_browser.XXXXXX.log)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { "${SUDO[@]}" apt-get update -qq && "${SUDO[@]}" apt-get install -y -qq chromium; } >"$log" 2>&1; then
    echo "install_test_browser.sh: apt-get install chromium failed:" >&2
    tail -n 30 "$log" >&2
    exit 1
fi

if ! [ -x /usr/bin/chromium ] && ! command -v chromium >/dev/null 2>&1; then
    echo "install_test_browser.sh: chromium was installed but is not on PATH" >&2
    exit 1
fi
