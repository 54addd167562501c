"""Shared test settings: one seeded Hypothesis profile for the whole suite.

Every property test runs derandomized (the same examples on every run and
every machine), without a per-example deadline (a gradient check takes a few
milliseconds, more on a busy CI box), and, unless it says otherwise, with 50
examples: the floor that the gradient checks of the operations must reach.

    HYPOTHESIS_PROFILE=thorough pytest tests/test_ops_elementwise.py

runs 500 examples per test instead, still seeded, for a deeper search
before a release.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "tinygen",
    derandomize=True,
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", settings.get_profile("tinygen"), max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "tinygen"))
