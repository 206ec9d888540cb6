import os
import sys

import pytest
import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Property-based tests (test_properties.py, test_cli.py): "ci" is deterministic (examples follow
# from each test's source, no example database) and bounded; `make fuzz` selects "fuzz": random,
# FUZZ_EXAMPLES examples per test (default 3000).
_health = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", derandomize=True, max_examples=30, deadline=None, database=None,
                          suppress_health_check=_health)
settings.register_profile("fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "3000")), deadline=None,
                          suppress_health_check=_health)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
