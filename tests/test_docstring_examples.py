"""The Examples in the public API's docstrings run, on each backend, and print what they say they print."""

import doctest

import pytest
import torch
from torch import nn

import bp_torch
import bp_torch.explain
import bp_torch.functional
import bp_torch.modules

MODULES = [bp_torch.functional, bp_torch.modules, bp_torch.explain]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example saves a checkpoint to its working directory
    torch.manual_seed(0)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, globs={"torch": torch, "nn": nn, "bp_torch": bp_torch}) if t.examples]
    assert tests, f"{module.__name__} has no Examples"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module.__name__}"
