"""Every test runs once per available backend ("python", and "cpp" when the extension is built)."""
import pytest

import bp_torch


@pytest.fixture(autouse=True, params=bp_torch.available_backends())
def backend(request):
    previous = bp_torch.backend()
    bp_torch.set_backend(request.param)
    yield request.param
    bp_torch.set_backend(previous)
