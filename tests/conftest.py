"""Every test runs once per available backend ("python", and "cpp" when the extension is built).

Mark a test ``@pytest.mark.backends("cpp")`` to run it on a subset of the backends only.
"""

import pytest

import bp_torch


def pytest_configure(config):
    config.addinivalue_line("markers", "backends(*names): run this test on these backends only")


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        names = [n for n in bp_torch.available_backends() if marker is None or n in marker.args]
        metafunc.parametrize("backend", names, indirect=True)


@pytest.fixture(autouse=True)
def backend(request):
    previous = bp_torch.backend()
    bp_torch.set_backend(request.param)
    yield request.param
    bp_torch.set_backend(previous)


# Hypothesis profiles for the property tests (tests/test_properties.py). "ci", the default, is deterministic
# (derandomize: the same examples on every run and machine) and runs 250 examples per property test and backend:
# 5 property tests x 250 = 1250 examples per backend, 2500 in all. `--hypothesis-profile=thorough` runs 10x as many.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=250,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile("thorough", settings.get_profile("ci"), max_examples=2500)
settings.load_profile("ci")
