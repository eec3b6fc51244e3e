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
# The ARM emulation tests (tests/local/test_arm_emulation.py) run ARM64 artifacts in an aarch64
# Python under qemu-user: build (or reuse, cached in /var/cache/airflow-neo) its root when root (it
# installs qemu-user with apt if needed) or when qemu-aarch64 is already installed, unless
# AIRFLOW_NEO_ARM64_ROOT already names one. Without it those tests are skipped, except under
# CI=true, where they fail, quoting the build log.
if [ -z "${AIRFLOW_NEO_ARM64_ROOT:-}" ] && { [ "$(id -u)" = 0 ] || command -v qemu-aarch64 >/dev/null 2>&1; }; then
  echo "==> aarch64 root for the ARM emulation tests (scripts/arm_root.sh)"
  arm_log="$(mktemp -t airflow-neo-arm-root.XXXXXX)"
  if arm_root="$(bash scripts/arm_root.sh 2>"$arm_log" | tail -n 1)" && [ -n "$arm_root" ]; then
    export AIRFLOW_NEO_ARM64_ROOT="$arm_root"
    tail -n 1 "$arm_log"
    rm -f "$arm_log"
  else
    tail -n 8 "$arm_log" >&2
    echo "==> no aarch64 root: the ARM emulation tests will be skipped (they fail under CI=true)" >&2
    export AIRFLOW_NEO_ARM64_ROOT_LOG="$arm_log"
  fi
fi
# The MXNET tests build Gluon models and take MXNet's outputs as the reference in a side virtualenv
# (MXNet 1.9.1 needs numpy < 1.24; scripts/mxnet_venv.sh, cached beside the aarch64 root), unless
# AIRFLOW_NEO_MXNET_PYTHON already names one. Without it they skip, except under CI=true.
if [ -z "${AIRFLOW_NEO_MXNET_PYTHON:-}" ]; then
  echo "==> MXNet side virtualenv for the MXNET reference (scripts/mxnet_venv.sh)"
  mx_log="$(mktemp -t airflow-neo-mxnet-venv.XXXXXX)"
  if mx_python="$(bash scripts/mxnet_venv.sh 2>"$mx_log" | tail -n 1)" && [ -n "$mx_python" ]; then
    export AIRFLOW_NEO_MXNET_PYTHON="$mx_python"
    tail -n 1 "$mx_log"
  else
    tail -n 8 "$mx_log" >&2
    echo "==> no MXNet side virtualenv: the MXNet-backed tests will be skipped (they fail under CI=true)" >&2
  fi
  rm -f "$mx_log"
fi
echo "==> pytest"
status=0
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=$?
if [ -n "$started_pg" ]; then bash scripts/postgres.sh stop || true; fi
exit "$status"
