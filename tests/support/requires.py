"""Optional packages the tests need: skipped with the reason where they are missing, failed under
``CI=true`` (CI installs every test dependency, so a missing one there is a broken setup, not a
reason to run less)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def require(module: str, install: str) -> ModuleType:
    """``module`` imported; a skip naming ``install`` when it is missing, a failure under CI."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        reason = f"{module} is not installed ({install}): {err}"
        if os.environ.get("CI"):
            pytest.fail(f"required under CI: {reason}", pytrace=False)
        pytest.skip(reason)
