#!/usr/bin/env bash
# Install the external tools the test suite checks splatlab against, in one step:
#   - PlayCanvas splat-transform (npm, PINNED below) into .tools/ (gitignored), the independent
#     implementation of SPZ, SOG and compressed .ply that tests/test_formats.py converts through;
#   - chromium for the viewer's browser test (scripts/install_test_browser.sh).
#
# Idempotent: returns at once when the pinned version is already in .tools/. Quiet unless it fails.
# Needs node >= 18 and npm on PATH; without them the format interop tests skip and say why.
set -euo pipefail

SPLAT_TRANSFORM_VERSION="3.7.0"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$here/.tools"

install_splat_transform() {
    local pkg_json="$tools/node_modules/@playcanvas/splat-transform/package.json"
    if [ -f "$pkg_json" ] && grep -q "\"version\": \"$SPLAT_TRANSFORM_VERSION\"" "$pkg_json"; then
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "install_test_tools.sh: npm not found; install node (>= 18) and npm, then rerun" >&2
        return 1
    fi
    mkdir -p "$tools"
    [ -f "$tools/package.json" ] || echo '{"private": true}' >"$tools/package.json"
    local log
    log="$(mktemp -t install_test_tools.XXXXXX.log)"
    if ! npm install --prefix "$tools" --no-audit --no-fund --save-exact \
            "@playcanvas/splat-transform@$SPLAT_TRANSFORM_VERSION" >"$log" 2>&1; then
        echo "install_test_tools.sh: npm install @playcanvas/splat-transform@$SPLAT_TRANSFORM_VERSION failed:" >&2
        tail -n 30 "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

# Both are attempted; the script fails if either did (each says why).
status=0
install_splat_transform || status=1
bash "$here/scripts/install_test_browser.sh" || status=1
exit $status
