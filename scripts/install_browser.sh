#!/usr/bin/env bash
# Install the headless browser used by the report browser test (tests/browser/).
#
# Idempotent: does nothing when /usr/bin/chromium and /usr/bin/chromedriver both exist.
# Otherwise runs `apt-get update` and `apt-get install -y chromium chromium-driver`
# (Debian package names). Exits non-zero with the reason when it cannot install, so that
# `make test` / CI stop there instead of silently skipping the browser test.
#
# Usage: scripts/install_browser.sh        (as root, or with sudo available)
set -euo pipefail

CHROMIUM=/usr/bin/chromium
DRIVER=/usr/bin/chromedriver

fail() {
    echo "install_browser.sh: $*" >&2
    exit 1
}

if [[ -x "$CHROMIUM" && -x "$DRIVER" ]]; then
    echo "install_browser.sh: $CHROMIUM and $DRIVER already present; nothing to do"
    "$CHROMIUM" --version 2>/dev/null || true
    exit 0
fi

command -v apt-get >/dev/null 2>&1 \
    || fail "apt-get not found: install Chromium and chromedriver by hand so that $CHROMIUM and $DRIVER exist"

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 \
        || fail "not root and sudo is not available: run 'apt-get install -y chromium chromium-driver' as root"
    SUDO=(sudo -n)
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update \
    || fail "'apt-get update' failed (no network or no permission?); cannot install chromium"
"${SUDO[@]}" apt-get install -y --no-install-recommends chromium chromium-driver \
    || fail "'apt-get install chromium chromium-driver' failed; see the apt output above"

[[ -x "$CHROMIUM" ]] || fail "apt-get finished but $CHROMIUM is missing (package layout changed?)"
[[ -x "$DRIVER" ]] || fail "apt-get finished but $DRIVER is missing (package layout changed?)"
echo "install_browser.sh: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
