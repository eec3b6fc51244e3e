"""Test-wide environment: a private AIRFLOW_HOME, unit-test mode, fake AWS credentials."""

from __future__ import annotations

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="airflow-neo-tests-")
os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# No MetaSchedule tuning unless a test asks for it (tests/local/test_tuning.py): the suite must stay fast.
os.environ["AIRFLOW__NEO__TUNING_TRIALS"] = "0"
os.environ["AIRFLOW_NEO_TUNING_TRIALS"] = "0"
# No latency profile of each compile's artifact unless a test asks for it (tests/local/test_profile.py):
# [neo] profile_seconds for hook-made jobs, and the default of every CompileSettings made in-process.
os.environ["AIRFLOW__NEO__PROFILE_SECONDS"] = "0"
import airflow_neo.local.settings as _neo_settings  # noqa: E402 - pure: imports neither Airflow nor TVM

_neo_settings.DEFAULT_PROFILE_SECONDS = 0.0
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_var, None)

pytest_plugins = ["tests.support.fixtures", "tests.support.stores"]
