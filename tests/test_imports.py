"""DAG-parse cost: importing the provider's task modules must not pull in the heavy stacks."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("tvm", "onnx", "onnxruntime", "torch", "tflite", "treelite", "tl2cgen", "xgboost", "boto3", "aiobotocore")


def test_task_modules_import_no_heavy_packages():
    code = (
        "import sys, json\n"
        "import airflow_neo.operators.neo, airflow_neo.sensors.neo, airflow_neo.triggers.neo\n"
        "import airflow_neo.hooks.factory, airflow_neo.links.neo, airflow_neo.get_provider_info\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_hooks_import_no_compiler_stack():
    code = (
        "import sys, json\n"
        "import airflow_neo.hooks.neo\n"
        "import airflow_neo.core.validation\n"
        "print(json.dumps([m for m in ('tvm', 'onnx', 'torch') if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_core_does_not_import_airflow():
    code = (
        "import sys, json\n"
        "import airflow_neo.core.validation, airflow_neo.core.payload, airflow_neo.core.attach, airflow_neo.core.waiting\n"
        "print(json.dumps('airflow' in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) is False


def test_provider_info_lists_every_part():
    from airflow_neo.get_provider_info import get_provider_info

    info = get_provider_info()
    assert info["package-name"] == "airflow-neo"
    modules = [m for section in ("hooks", "operators", "sensors", "triggers") for entry in info[section] for m in entry["python-modules"]]
    import importlib

    for module in modules:
        importlib.import_module(module)
    assert info["extra-links"] == ["airflow_neo.links.neo.NeoCompilationJobLink"]
    assert {"local_store", "default_backend"} <= set(info["config"]["neo"]["options"])


def test_provider_is_registered_with_airflow():
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("airflow_neo")]
    assert len(eps) == 1 and eps[0].load()()["package-name"] == "airflow-neo"
