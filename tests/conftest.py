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
