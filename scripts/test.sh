#!/usr/bin/env bash
# Set up everything (including Elasticsearch through Maven) and run the whole test suite.
# With CI=true, tests that need Elasticsearch or ../shared/data fail instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
set +e
.venv/bin/python -m pytest -q -rs "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests — that is a failure" >&2
  exit 1
fi
exit "$rc"
