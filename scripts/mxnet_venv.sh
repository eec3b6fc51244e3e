#!/usr/bin/env bash
# Build, once per machine, a side virtualenv with MXNet 1.9.1 (the reference runtime of MXNET jobs
# and of tests/local/convert/test_mxnet.py) and print its python as the last line of stdout.
#
#   export AIRFLOW_NEO_MXNET_PYTHON="$(bash scripts/mxnet_venv.sh | tail -n 1)"
#
# MXNet 1.9.1 (its last release, 2022) needs numpy < 1.24 (it uses np.bool) and so a Python with
# such numpy wheels (3.8-3.11): it can never share the worker's environment (numpy 2). A job's
# verification runs it as a separate process (airflow_neo/local/convert/mxnet_runner.py).
# Cache: ${AIRFLOW_NEO_CACHE:-/var/cache/airflow-neo}/mxnet-venv (non-root default:
# ${XDG_CACHE_HOME:-$HOME/.cache}/airflow-neo), rebuilt when missing or when its stamp (the
# versions below) differs; concurrent runs wait on a lock. About 15 s and 300 MB. Logs: stderr.
set -euo pipefail
MXNET_VERSION="${MXNET_VERSION:-1.9.1}"
NUMPY_SPEC="${MXNET_NUMPY_SPEC:-numpy<1.24}"
PYTHON="${MXNET_BASE_PYTHON:-python3}"
STAMP="mxnet==$MXNET_VERSION $NUMPY_SPEC $("$PYTHON" -c 'import sys; print("py%d.%d" % sys.version_info[:2])')"

if [ -n "${AIRFLOW_NEO_CACHE:-}" ]; then
  CACHE="$AIRFLOW_NEO_CACHE"
elif [ "$(id -u)" = 0 ]; then
  CACHE=/var/cache/airflow-neo
else
  CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/airflow-neo"
fi
VENV="$CACHE/mxnet-venv"
mkdir -p "$CACHE"
exec 9>"$CACHE/mxnet-venv.lock"
flock 9
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.stamp" 2>/dev/null)" = "$STAMP" ] \
   && "$VENV/bin/python" -c 'import mxnet' >/dev/null 2>&1; then
  echo "mxnet-venv: cached at $VENV ($STAMP)" >&2
  echo "$VENV/bin/python"
  exit 0
fi
started=$(date +%s)
# A venv is not relocatable: build at the final path; the stamp, written last, marks it complete.
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV" >&2
"$VENV/bin/python" -m pip install -q "mxnet==$MXNET_VERSION" "$NUMPY_SPEC" >&2
"$VENV/bin/python" -c 'import mxnet, numpy; print("mxnet", mxnet.__version__, "numpy", numpy.__version__)' >&2
echo "$STAMP" > "$VENV/.stamp"
echo "mxnet-venv: built $VENV in $(( $(date +%s) - started )) s ($(du -sh "$VENV" | cut -f1))" >&2
echo "$VENV/bin/python"
