"""Sphinx configuration of bp_torch's API reference: `sphinx-build -W -n -b html docs/api build/docs` (CI runs it).

The pages are generated from the docstrings (autodoc), which follow torch.nn.Linear's style: the formula, then Args,
Shape, Attributes and Examples (napoleon reads those sections).
"""

import bp_torch

project = "bp_torch"
author = "the bp_torch authors"
copyright = "2026, the bp_torch authors"
release = bp_torch.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.intersphinx"]
autodoc_member_order = "bysource"
# torch.autograd.Function's and nn.Module's own docstrings (forward, backward, setup_context) are about torch, not us.
autodoc_inherit_docstrings = False
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# No network at build time: references to torch's own classes are checked against nothing, so they are left as text
# rather than reported as broken (nitpick_ignore below names them).
intersphinx_mapping: dict = {}
nitpicky = True
nitpick_ignore_regex = [
    (r"py:class", r"(torch\..*|Tensor|collections\.abc\..*|contextlib\..*|typing\..*|os\..*|optional)"),
    (r"py:.*", r"torch\..*"),
]
html_theme = "alabaster"
