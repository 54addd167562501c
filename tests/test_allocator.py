"""Tests of tinygen/allocator.py: freed memory is reused instead of faulted in again.

What they prove: on glibc, importing tinygen stops the pattern a training step
repeats (large arrays allocated, all freed, allocated again) from costing page
faults, while the same pattern without the settings (TINYGEN_MALLOC=system)
faults every page again; `tinygen.info()` reports which applies. Each case runs
in a fresh interpreter, since malloc settings belong to the whole process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tinygen import allocator

pytestmark = pytest.mark.skipif(
    allocator.glibc_version() is None, reason="the C library is not glibc: settings not applied"
)

# Three 8 MiB arrays, freed together, five times over: glibc's own rule gives the free
# 24 MiB back to the system each time (more than twice its raised 8 MiB threshold).
PATTERN = """
import json, os, resource, sys
import numpy as np
import tinygen
faults = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.ones(2 << 20, dtype=np.float32) for _ in range(3)]
    del arrays
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"faults": faults[1:], "malloc": tinygen.info()["malloc"]}))
"""


def _run(malloc_setting: str | None) -> dict:
    env = {"TINYGEN_MALLOC": malloc_setting} if malloc_setting else {}
    result = subprocess.run(
        [sys.executable, "-c", PATTERN],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_without_page_faults():
    kept = _run(None)
    assert kept["malloc"].startswith("glibc")
    assert max(kept["faults"]) < 50, kept  # measured 0; faulting the 24 MiB in again: ~1,000


def test_without_the_settings_the_same_pattern_faults_every_time():
    # the control: shows that the test above would see the faults if they happened
    system = _run("system")
    assert system["malloc"] == "system malloc settings (TINYGEN_MALLOC=system)"
    assert min(system["faults"]) > 500, system  # measured ~1,000 (some as 2 MiB huge pages)


def test_status_names_the_settings():
    import tinygen

    assert tinygen.info()["malloc"] == allocator.STATUS
    assert "32 MiB" in allocator.STATUS and "1024 MiB" in allocator.STATUS
