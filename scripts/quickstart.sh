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
log="$AIRFLOW_HOME/neo_local_compile.log"
echo "==> airflow dags test neo_local_compile (about 30-60 s; log: $log)"
"$VENV/bin/airflow" dags test neo_local_compile >"$log" 2>&1 &
dags_test=$!
started=$SECONDS
while kill -0 "$dags_test" 2>/dev/null; do
  sleep 5
  if kill -0 "$dags_test" 2>/dev/null; then
    echo "    ... $((SECONDS - started)) s: $(grep -oE "phase [a-z]+: [a-z]+|Running task|Marking task as SUCCESS" "$log" | tail -n 1)"
  fi
done
if ! wait "$dags_test"; then
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
job="$("$VENV/bin/python" -c 'import sys; from pathlib import Path; from airflow_neo.local.store import JobStore
print(JobStore(Path(sys.argv[1]) / "neo" / "jobs.sqlite").list(SortBy="CreationTime", SortOrder="Descending", MaxResults=1)["CompilationJobSummaries"][0]["CompilationJobName"])' "$AIRFLOW_HOME")"
venv_bin="$(cd "$VENV/bin" && pwd)"
cat <<NEXT

Next: look at the job with the command line (these work as printed, from any directory):
  export AIRFLOW_HOME=$AIRFLOW_HOME
  $venv_bin/airflow-neo --backend local describe-compilation-job --compilation-job-name $job
  $venv_bin/airflow-neo --backend local list-compilation-jobs --output table
  $venv_bin/airflow-neo --backend local describe-compilation-report --compilation-job-name $job --output text
Or run 'source $venv_bin/activate' first and type 'airflow-neo ...';
'export AIRFLOW__NEO__DEFAULT_BACKEND=local' makes --backend local the default.
NEXT
