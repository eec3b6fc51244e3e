#!/usr/bin/env bash
# Set up a fresh machine and run the main job: compile a small model with the local backend.
# Ends with the DescribeCompilationJob payload and the artifact path on screen.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${VENV:-.venv}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$PWD/.airflow_home}"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
echo "==> airflow db migrate (AIRFLOW_HOME=$AIRFLOW_HOME)"
"$VENV/bin/airflow" db migrate >/dev/null
echo "==> airflow dags test neo_local_compile"
log="$AIRFLOW_HOME/neo_local_compile.log"
if ! "$VENV/bin/airflow" dags test neo_local_compile >"$log" 2>&1; then
  tail -n 60 "$log"
  echo "neo_local_compile failed; full log: $log" >&2
  exit 1
fi
"$VENV/bin/python" - "$AIRFLOW_HOME" <<'PY'
import json, sys
from pathlib import Path
from airflow_neo.local.store import JobStore
store = JobStore(Path(sys.argv[1]) / "neo" / "jobs.sqlite")
latest = store.list(SortBy="CreationTime", SortOrder="Descending", MaxResults=1)["CompilationJobSummaries"][0]
payload = store.describe(latest["CompilationJobName"])
print(json.dumps(payload, indent=2))
print(f"\nStatus:   {payload['CompilationJobStatus']}")
print(f"Artifact: {payload['ModelArtifacts']['S3ModelArtifacts']}")
PY
grep -E "^(Artifact|Ran once):" "$log" | tail -n 1
