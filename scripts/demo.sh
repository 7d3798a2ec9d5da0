#!/usr/bin/env bash
# Quickstart: set up, then run a coordinator on a private etcd with two example
# participants; one saga commits and one compensates.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/txc demo
