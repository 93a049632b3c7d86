#!/usr/bin/env bash
# Checks and unit-tests the Prometheus alert rules (used by `make test`).
# promtool comes from Debian: apt-get install -y prometheus   (provides /usr/bin/promtool)
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v promtool >/dev/null 2>&1; then
	echo "check.sh: promtool not found; install it with: apt-get install -y prometheus" >&2
	exit 1
fi

promtool check rules rules.yaml
promtool test rules rules_test.yaml
