#!/usr/bin/env bash
# PostgreSQL's server binaries (initdb, pg_ctl) for the tests: tests/pg_support.py starts a
# throwaway server in a temp folder, so the ingest store is tested on PostgreSQL as well as
# SQLite. Debian/Ubuntu only; elsewhere install PostgreSQL yourself (those tests skip without).
set -euo pipefail
if command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install_postgres.sh: no apt-get here; install PostgreSQL for the PostgreSQL tests" >&2
    exit 0
fi
sudo=""; [[ "$(id -u)" != 0 ]] && sudo="sudo"
$sudo apt-get update -q && $sudo apt-get install -y -q postgresql
