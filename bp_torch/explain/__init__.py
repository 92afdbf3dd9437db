"""Back-propagation made visible: every chain-rule factor of the chapter, per layer, checked against torch autograd.

In short::

    report = bp_torch.explain(model, x, y)      # model: SigmoidMLP, SigmoidLinear, or nn.Sequential of SigmoidLinear
    print(report)                               # a readable table, each value labelled with its equation
    report.to_dict()                            # the same numbers as plain lists and floats (JSON-serialisable)
    report.plot("net.png")                      # the network, edges coloured and sized by |dC/dw|
    report.to_html("explain.html")              # the same, as a page you can click (and inline in Jupyter)

    python -m bp_torch.explain                  # the 2-2-2 worked example of Mazur (2015), every intermediate value
    python -m bp_torch.explain --sizes 3 4 4 2 --seed 1 --lr 0.5 --plot net.png
    python -m bp_torch.explain --checkpoint net.pt --input 0.1 0.9 --target 1 0
    python -m bp_torch.explain --html explain.html --steps 20

For layer ``l`` of ``L`` the chapter writes ``dC/dw^l = dz^l/dw^l * da^l/dz^l * dC/da^l`` with::

    (1.1) / (2.1)  dz^l/dw^l = a^(l-1)
    (1.2) / (2.2)  da^l/dz^l = sigma'(z^l) = a^l (1 - a^l)
    (1.3)          dC/da^L   = a^L - y                                       (the output layer)
    (2.3)          dC/da^l   = dC/da^(l+1) (2.3.1)  x  da^(l+1)/da^l (2.3.2)  (a layer below it)
    (2.3.2)        da^(l+1)/da^l = sigma'(z^(l+1)) w^(l+1)

Their product is (A) for the output layer, ``a^(L-1) * sigma'(z^L) * (a^L - y)``, and (B) for the layer below it,
``a^(L-2) * sigma'(z^(L-1)) * (a^L - y) * sigma'(z^L) * w^L``; further down, (B) generalised gains one factor
``sigma'(z^k) * w^k`` per layer crossed. The explainer computes each factor as its own tensor (the Jacobian
``da^(l+1)/da^l`` in full, not folded into a "delta"), multiplies them out weight by weight, and sets the result
beside the gradient that torch autograd computes through the model itself.

The formulas it shares with the library come from :mod:`bp_torch.autograd` (``sigmoid_prime_from_output`` for
(1.2)/(2.2), ``quadratic_cost_backward`` for (1.3)); the reference gradient comes from ``torch.autograd.grad`` on
``cost(model(x), y)``, run on copies of the parameters, so the model and its ``.grad`` are left untouched.

One job a module: ``_explain.py`` computes the report (explain(), the checks of what it is given, and the SGD steps
the page slides through); ``_report.py`` holds it (LayerReport, ExplainReport); ``_notation.py`` writes each
quantity as the chapter does; ``_text.py`` is the table of ``print(report)``, ``_plot.py`` the picture, ``_page.py``
with ``page.html`` the page; ``_worked_examples.py`` has Mazur's network; ``_cli.py`` is the command line.
"""

from ._cli import main
from ._explain import explain
from ._report import ExplainReport, LayerReport
from ._worked_examples import mazur_example

__all__ = ["ExplainReport", "LayerReport", "explain", "main", "mazur_example"]
