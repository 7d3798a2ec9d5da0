#!/usr/bin/env bash
# The test command: set up, make sure the databases answer, lint, type-check, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/databases.sh
.venv/bin/ruff check .
.venv/bin/mypy
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then echo "test: pytest collected no tests" >&2; exit 1; fi
exit "$code"
