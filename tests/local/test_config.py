"""The local job's one config (airflow_neo.local.config.LocalJobConfig): built once, carried as one value."""

from __future__ import annotations

import dataclasses
import json

import pytest

from airflow_neo.local.config import ENV_JOB_CONFIG, LocalJobConfig
from airflow_neo.local.settings import CompileSettings


def _config(tmp_path) -> LocalJobConfig:
    return LocalJobConfig(
        store="postgresql+psycopg://neo:p%40ss@db.internal/neo",
        work_dir=str(tmp_path / "scratch"),
        memory_limit_bytes=2 * 1024**3,
        lease_seconds=12.5,
        aws_conn_id="aws_models",
        compile=CompileSettings(tuning_trials=64, tuning_database="s3://team-bucket/tuning", cache_max_bytes=10),
    )


def test_round_trip_through_json_and_the_environment(tmp_path):
    config = _config(tmp_path)
    assert LocalJobConfig.from_json(config.to_json()) == config
    env = config.to_env()
    assert list(env) == [ENV_JOB_CONFIG]
    assert LocalJobConfig.from_env(env) == config
    resolved = config.replace(compile=config.compile.resolved(tmp_path))  # what the runner hands the child
    assert LocalJobConfig.from_json(resolved.to_json()) == resolved
    assert LocalJobConfig.from_env({}) is None


def test_defaults_and_tuning_trials(tmp_path):
    config = LocalJobConfig(store=str(tmp_path / "jobs.db"))
    assert config.memory_limit_bytes == 8 * 1024**3 and config.lease_seconds == 30 and config.aws_conn_id is None
    assert config.compile == CompileSettings()
    assert config.with_tuning_trials(None) is config
    assert config.with_tuning_trials(7).compile.tuning_trials == 7
    with pytest.raises(ValueError, match=r"tuning_trials must be a whole number >= 0; got -1"):
        config.with_tuning_trials(-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.store = "elsewhere"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "field", "value"),
    [
        ({"store": "  "}, "store", "'  '"),
        ({"memory_limit_bytes": 0}, "memory_limit_bytes", "0"),
        ({"memory_limit_bytes": True}, "memory_limit_bytes", "True"),
        ({"lease_seconds": -1}, "lease_seconds", "-1"),
        ({"lease_seconds": "30"}, "lease_seconds", "'30'"),
    ],
)
def test_bad_values_name_the_field_and_the_value(tmp_path, changes, field, value):
    with pytest.raises(ValueError) as info:
        _config(tmp_path).replace(**changes)
    assert str(info.value).startswith(field) and str(info.value).endswith(f"got {value}")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["compile"].update(tuning_trials="lots"), "tuning_trials must be a whole number >= 0; got 'lots'"),
        (lambda d: d["compile"].update(cache_dir="gs://bucket/cache"), "cache_dir 'gs://bucket/cache': the gs:// scheme"),
        (lambda d: d.update(colour="blue"), "unknown fields ['colour']"),
        (lambda d: d["compile"].update(budget=3), "unknown compile fields ['budget']"),
        (lambda d: d.update(memory_limit_bytes=-5), "memory_limit_bytes must be a whole number > 0 or None (no cap); got -5"),
    ],
)
def test_a_bad_serialized_config_names_the_field_and_the_value(tmp_path, mutate, message):
    data = json.loads(_config(tmp_path).to_json())
    mutate(data)
    with pytest.raises(ValueError) as info:
        LocalJobConfig.from_env({ENV_JOB_CONFIG: json.dumps(data)})
    assert message in str(info.value)


def test_not_json_is_named():
    with pytest.raises(ValueError, match=f"{ENV_JOB_CONFIG}: not valid JSON"):
        LocalJobConfig.from_env({ENV_JOB_CONFIG: "{nope"})
