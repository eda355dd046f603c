#!/usr/bin/env bash
# Everything the project needs on a fresh machine, idempotent (re-running is cheap).
#   scripts/setup.sh          → Python env (.venv) with the package and its dependencies
#   scripts/setup.sh test     → the same + test dependencies + Java/Maven + the Elasticsearch distribution
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-run}"

apt_pkgs=()
if ! python3 -c 'import sys; assert sys.version_info[:2] >= (3, 11)' 2>/dev/null; then
  apt_pkgs+=(python3 python3-venv)
fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  apt_pkgs+=(python3-venv)
fi
if [ "$MODE" = "test" ]; then
  command -v java >/dev/null 2>&1 || apt_pkgs+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || apt_pkgs+=(maven)
  # headless browser tests of the annotation tool (Selenium drives Debian's Chromium; CJK fonts for the screenshots)
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    apt_pkgs+=(chromium chromium-driver fonts-noto-cjk)
  elif [ ! -e /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ]; then
    apt_pkgs+=(fonts-noto-cjk)
  fi
fi
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
  echo "setup: installing system packages: ${apt_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
if [ "$MODE" = "test" ]; then
  .venv/bin/python -m pip install -q -e ".[test]"
  echo "setup: fetching Elasticsearch ${ES_VERSION:-8.19.21} through Maven (cached after the first time)"
  .venv/bin/python -m search.es_local fetch
else
  .venv/bin/python -m pip install -q -e .
fi
echo "setup: done ($MODE)"
