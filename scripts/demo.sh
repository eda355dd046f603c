#!/usr/bin/env bash
# The main job: set up, build the demo catalog and embedded index (first run only), and
# serve the search API on http://127.0.0.1:8000 (docs at /docs). Extra args go to `mvsearch demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh run
exec .venv/bin/mvsearch demo "$@"
