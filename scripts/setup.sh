#!/usr/bin/env bash
# Installs what txcoord needs on Debian/Ubuntu: etcd (Debian's etcd-server), python3-venv,
# iproute2 and iptables (chaos harness), docker-compose (checks docker-compose.yml),
# chromium and chromium-driver (the console's browser tests),
# and the project itself into .venv (pip install -e ".[dev]"). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

command -v etcd >/dev/null 2>&1 || { echo "setup: installing etcd-server"; apt_install etcd-server; }
# The chaos harness' packet-level faults: network namespaces (iproute2) and iptables.
for tool in ip:iproute2 iptables:iptables; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || { echo "setup: installing ${tool#*:}"; apt_install "${tool#*:}"; }
done
# docker-compose (Debian's 1.29, no engine needed): the tests run `docker-compose config`
# on docker-compose.yml. --no-install-recommends keeps the Docker engine out.
command -v docker-compose >/dev/null 2>&1 || { echo "setup: installing docker-compose";
  apt_install --no-install-recommends docker-compose; }
# The console's browser tests drive Debian's headless Chromium through chromedriver.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "setup: installing chromium and chromium-driver"
  apt_install --no-install-recommends chromium chromium-driver
fi
# Debian's package may start a system etcd on :2379; txcoord's dev mode and tests use their own.
python3 -m venv --help >/dev/null 2>&1 || { echo "setup: installing python3-venv"; apt_install python3-venv; }
python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv

if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c 'import coordinator' || { echo "setup: install failed" >&2; exit 1; }
echo "setup: ready (.venv/bin/txc)"
