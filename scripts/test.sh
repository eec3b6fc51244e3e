#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${VENV:-.venv}"
# The shared-job-store tests need PostgreSQL: start a throwaway server (installed from Debian's
# packages when root) unless AIRFLOW_NEO_TEST_PG_URL already names one. Without it those tests
# are skipped, except under CI=true, where tests/local/test_store.py fails instead.
started_pg=""
if [ -z "${AIRFLOW_NEO_TEST_PG_URL:-}" ]; then
  echo "==> PostgreSQL for the shared job store tests (scripts/postgres.sh)"
  if AIRFLOW_NEO_TEST_PG_URL="$(bash scripts/postgres.sh start)"; then
    export AIRFLOW_NEO_TEST_PG_URL
    started_pg=1
  else
    echo "==> no PostgreSQL: the PostgreSQL store tests will be skipped" >&2
    unset AIRFLOW_NEO_TEST_PG_URL
  fi
fi
echo "==> pytest"
status=0
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=$?
if [ -n "$started_pg" ]; then bash scripts/postgres.sh stop || true; fi
exit "$status"
