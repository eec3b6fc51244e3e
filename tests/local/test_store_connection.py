"""A store that does not exist yet is created by the first job, never by a read, and a miss says where it looked."""

from __future__ import annotations

import pytest

from airflow_neo.core.exceptions import CompilationJobNotFound
from airflow_neo.local.store import JobStore
from tests.support.requests import valid_request


def test_reads_of_a_missing_sqlite_store_create_nothing(tmp_path):
    path = tmp_path / "home" / "neo" / "jobs.sqlite"
    store = JobStore(path)
    assert store.list() == {"CompilationJobSummaries": []}
    assert store.reap() == []
    for call in (store.describe, store.status, store.request_stop, store.delete, store.get_request):
        with pytest.raises(CompilationJobNotFound) as err:
            call("sample-cnn")
        message = str(err.value)
        assert f"Could not find compilation job 'sample-cnn' in the local job store {path}" in message
        assert "no such file" in message and "AIRFLOW_HOME" in message
    assert not path.exists() and not path.parent.exists(), "a read-only call created the store"


def test_the_first_create_makes_the_store_and_later_misses_name_it(tmp_path):
    path = tmp_path / "neo" / "jobs.sqlite"
    store = JobStore(path)
    store.create(valid_request("made"))
    assert path.is_file()
    assert store.status("made") == "STARTING"
    with pytest.raises(CompilationJobNotFound) as err:
        store.describe("other")
    assert str(err.value) == f"Could not find compilation job 'other' in the local job store {path}."
    assert JobStore(path).status("made") == "STARTING"  # a second opener of the now existing file


def test_a_miss_names_the_store_without_its_password(store_target):
    store = JobStore(store_target)
    with pytest.raises(CompilationJobNotFound) as err:
        store.describe("nope")
    message = str(err.value)
    assert message.startswith("Could not find compilation job 'nope' in the local job store ")
    assert store.display_target in message
    if store.url.password:
        assert store.url.password not in message
