"""Sphinx configuration. The target table and the framework list are generated from the code."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

project = "airflow-neo"
author = "airflow-neo developers"
copyright = "2026, airflow-neo developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "alabaster"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
suppress_warnings = ["myst.header"]
nitpicky = False


def _cell(value) -> str:
    if value in (None, "", []):
        return "-"
    if isinstance(value, list):
        return " ".join(value)
    return str(value).replace("|", "/")


def write_target_table(app) -> None:
    """docs/_generated/targets.rst from airflow_neo.local.targets.support_table() (one table, in code)."""
    from airflow_neo.local.targets import support_table

    rows = support_table()
    out = Path(app.srcdir) / "_generated"
    out.mkdir(exist_ok=True)
    lines = []
    for supported, title in ((True, "Supported targets"), (False, "Targets the local backend refuses")):
        lines += [
            f".. list-table:: {title}",
            "   :header-rows: 1",
            "   :widths: 10 16 16 14 10 20 14",
            "",
            "   * - Kind",
            "     - Name",
            "     - LLVM triple (host)",
            "     - mcpu / mattr, gpu-code",
            "     - Debian package",
            "     - Notes",
            "     - Artifacts checked by",
        ]
        for row in (r for r in rows if r["supported"] is supported):
            cpu = _cell(row["mcpu"]) + ((" " + _cell(row["mattr"])) if row["mattr"] else "")
            if row.get("gpu_code") or "NVIDIA" in row["name"]:
                cpu += f", gpu-code {row.get('gpu_code') or '(required)'}"
            notes = " ".join(part for part in (row["description"], row["note"]) if part) or "-"
            lines += [
                f"   * - {row['kind']}",
                f"     - ``{row['name']}``",
                f"     - {_cell(row['triple'])}",
                f"     - {cpu if supported else '-'}",
                f"     - {_cell(row['debian_package'])}",
                f"     - {_cell(notes)}",
                f"     - {_cell(row.get('checked'))}",
            ]
        lines.append("")
    content = "\n".join(lines) + "\n"
    target = out / "targets.rst"
    if not target.exists() or target.read_text() != content:
        target.write_text(content)


def setup(app):
    app.connect("builder-inited", write_target_table)
