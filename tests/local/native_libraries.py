"""Real shared objects that misbehave when a process loads them, for the deploy-host check's tests.

:func:`misbehaving_library` compiles (with ``gcc``) a tiny C file whose constructor runs when the
library is loaded (``dlopen``, which TVM's ``load_module`` does): it writes the process id to the
file named by ``$NEO_TEST_PID_FILE`` (when set), then does what ``behaviour`` says: ``segfault``
(a write through a null pointer: a real SIGSEGV), ``abort`` (SIGABRT), ``exit`` (``_exit(3)``: a
process that ends without a word) or ``hang`` (sleeps for a minute).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PID_FILE_ENV = "NEO_TEST_PID_FILE"

_ACTIONS = {
    "segfault": "*(volatile int *)0 = 42;",
    "abort": "abort();",
    "exit": "_exit(3);",
    "hang": "sleep(60);",
}

_SOURCE = """
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void misbehave(void) {
    const char *path = getenv("%(env)s");
    if (path) {
        FILE *handle = fopen(path, "w");
        if (handle) { fprintf(handle, "%%d", (int)getpid()); fclose(handle); }
    }
    fprintf(stderr, "misbehaving library loaded: %(behaviour)s\\n");
    fflush(stderr);
    %(action)s
}

int misbehaving_library_marker(void) { return 1; }
"""


def misbehaving_library(folder: Path, behaviour: str) -> bytes:
    """The bytes of a shared object that does ``behaviour`` when it is loaded (see the module docstring)."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler to build a misbehaving shared object")
    source = folder / f"{behaviour}.c"
    library = folder / f"{behaviour}.so"
    source.write_text(_SOURCE % {"env": PID_FILE_ENV, "behaviour": behaviour, "action": _ACTIONS[behaviour]})
    subprocess.run([compiler, "-shared", "-fPIC", "-O0", "-o", str(library), str(source)], check=True,
                   capture_output=True, timeout=120)
    return library.read_bytes()
