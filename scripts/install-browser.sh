#!/usr/bin/env bash
# Debian's headless Chromium for the UI's end-to-end test (for hosts where Playwright cannot download its browsers).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
sudo_cmd=""
[ "$(id -u)" = 0 ] || sudo_cmd="sudo"
echo "setup: installing Debian's chromium for the browser test"
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
