#!/usr/bin/env bash
# Runs the judgectl command-line tests against the binaries in $1 (default bin).
set -eu
cd "$(dirname "$0")/../.."
exec python3 tests/cli/test_cli.py "${1:-bin}"
