"""bp_torch.explain's interactive page: ExplainReport.to_html(), _repr_html_ and `python -m bp_torch.explain --html`.

The numbers the page carries and shows are compared with torch autograd run here on the network written in plain
torch (F.linear + torch.sigmoid + the cost written out, sharing no code with bp_torch), with plain SGD steps taken
here, with Mazur's published values, and with the Python report. The page itself is driven in a real headless
browser (Playwright and Debian's chromium, see tests/browser.py): real clicks on edges and nodes, the step buttons,
the slider by keyboard; every page must log no error, raise nothing and request nothing from the network.

Without a browser the browser tests skip, saying why. With CI=true they fail instead: .ci/run installs chromium,
so a skip there would mean the page went untested.
"""

import html
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import bp_torch
from bp_torch import SigmoidMLP
from bp_torch.explain import mazur_example

import headless_chromium as chromium

ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------------------------------
# Independent references
# --------------------------------------------------------------------------------------------------------------------


def plain_autograd(weights, biases, x, y, reduction="mean"):
    """The network in plain torch, differentiated by autograd: a^l, z^l, sigma'(z^l), dC/da^l, C, dC/dW, dC/db."""
    weights = [w.detach().clone().requires_grad_() for w in weights]
    biases = [None if b is None else b.detach().clone().requires_grad_() for b in biases]
    a = [x.reshape(-1, x.shape[-1])]
    zs, sigma_prime = [], []
    for w, b in zip(weights, biases):
        z = F.linear(a[-1], w, b)
        zs.append(z.detach())
        z_leaf = z.detach().requires_grad_()
        sigma_prime.append(torch.autograd.grad(torch.sigmoid(z_leaf).sum(), z_leaf)[0])
        a.append(torch.sigmoid(z))
        a[-1].retain_grad()
    per_sample = 0.5 * (y.reshape(a[-1].shape) - a[-1]).square().sum(-1)
    cost = per_sample.mean() if reduction == "mean" else per_sample.sum()
    cost.backward()
    return {
        "a": [t.detach() for t in a],
        "z": zs,
        "sigma_prime": sigma_prime,
        "cost": cost.item(),
        "dC_da": [None] + [t.grad for t in a[1:]],
        "dC_dw": [w.grad for w in weights],
        "dC_db": [None if b is None else b.grad for b in biases],
    }


def plain_sgd(weights, biases, x, y, lr, steps, reduction="mean"):
    """[plain_autograd at step 0, ..., at step `steps`], each step W <- W - lr * dC/dW with autograd's dC/dW."""
    weights = [w.detach().clone() for w in weights]
    biases = [None if b is None else b.detach().clone() for b in biases]
    states = []
    for _ in range(steps + 1):
        ref = plain_autograd(weights, biases, x, y, reduction)
        ref["weights"], ref["biases"] = [w.clone() for w in weights], [None if b is None else b.clone() for b in biases]
        states.append(ref)
        weights = [w - lr * g for w, g in zip(weights, ref["dC_dw"])]
        biases = [None if b is None else b - lr * g for b, g in zip(biases, ref["dC_db"])]
    return states


def params(model):
    return [layer.weight for layer in model], [layer.bias for layer in model]


def random_case(sizes, batch=None, seed=0):
    torch.manual_seed(seed)
    model = SigmoidMLP(sizes, dtype=torch.float64)
    shape = () if batch is None else (batch,)
    return model, torch.rand(*shape, sizes[0], dtype=torch.float64), torch.rand(*shape, sizes[-1], dtype=torch.float64)


def page_data(page):
    """The JSON the page embeds."""
    match = re.search(r'<script id="bp-data" type="application/json">(.*?)</script>', page, re.S)
    return json.loads(match.group(1))


def f64(values):
    return torch.tensor(values, dtype=torch.float64)


def close(a, b, tol=1e-12):
    torch.testing.assert_close(
        torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), rtol=0, atol=tol
    )


# --------------------------------------------------------------------------------------------------------------------
# The page's data, without a browser
# --------------------------------------------------------------------------------------------------------------------


def test_page_data_is_the_report_then_its_sgd_steps():
    model, x, y, lr = mazur_example()
    report = bp_torch.explain(model, x, y)
    data = page_data(report.to_html(steps=5))
    assert len(data["steps"]) == 6 and data["lr"] == 0.5 and data["sizes"] == [2, 2, 2]
    # step 0 is the report itself, exactly
    first = report.to_dict()
    for key in ("sizes", "cost", "x", "y", "max_abs_diff"):
        assert data["steps"][0][key] == first[key], key
    for got, want in zip(data["steps"][0]["layers"], first["layers"]):
        for key, value in want.items():
            assert got[key] == value, key
    # every step against plain torch: autograd's gradients, and W <- W - eta dC/dW taken here
    for step, ref in zip(data["steps"], plain_sgd(*params(model), x, y, lr, 5)):
        assert step["cost"]["value"] == pytest.approx(ref["cost"], abs=1e-14)
        for l, layer in enumerate(step["layers"]):
            close(layer["weight"], ref["weights"][l])
            close(layer["bias"], ref["biases"][l])
            close(layer["dC_dw"], ref["dC_dw"][l])
            close(layer["autograd_dC_dw"], ref["dC_dw"][l])
            close(layer["dC_db"], ref["dC_db"][l])
            close(layer["abs_diff"], (f64(layer["dC_dw"]) - f64(layer["autograd_dC_dw"])).abs(), tol=0)
            assert max(max(row) for row in layer["abs_diff"]) <= 1e-15
    costs = [step["cost"]["value"] for step in data["steps"]]
    assert all(after < before for before, after in zip(costs, costs[1:]))  # the network learns
    # step 1's weights are Mazur's published w1+ .. w8+
    step1 = data["steps"][1]["layers"]
    close(step1[0]["weight"], [[0.149780716, 0.19956143], [0.24975114, 0.29950229]], tol=1e-8)
    close(step1[1]["weight"], [[0.35891648, 0.408666186], [0.511301270, 0.561370121]], tol=1e-8)
    # the model the report was made from is untouched
    assert torch.equal(model[0].weight, torch.tensor([[0.15, 0.20], [0.25, 0.30]], dtype=torch.float64))


def test_batch_with_summed_cost_steps_on_the_summed_cost():
    """A report on C summed over 3 samples steps W <- W - eta dC_sum/dW (sgd_step averages, so eta is scaled)."""
    model, x, y = random_case([3, 4, 2], batch=3, seed=2)
    report = bp_torch.explain(model, x, y, cost="sum")
    data = page_data(report.to_html(steps=3, lr=0.7))
    for step, ref in zip(data["steps"], plain_sgd(*params(model), x, y, 0.7, 3, reduction="sum")):
        assert step["cost"]["value"] == pytest.approx(ref["cost"], abs=1e-13)
        for l, layer in enumerate(step["layers"]):
            close(layer["weight"], ref["weights"][l])
            close(layer["dC_dw"], ref["dC_dw"][l])
            # the batch table's rows: one product per sample, which sum to dC/dw
            close(f64(layer["dC_dw_per_sample"]).sum(0), ref["dC_dw"][l])
            close(layer["a_mean"], ref["a"][l + 1].mean(0))


def test_hidden_layer_terms_of_equation_2_3():
    model, x, y = random_case([3, 4, 4, 2], seed=5)
    data = page_data(bp_torch.explain(model, x, y).to_html(steps=0))
    ref = plain_autograd(*params(model), x, y)
    for l in (1, 2):  # hidden layers: dC/da^l_k = sum_j dC/da^(l+1)_j * da^(l+1)_j/da^l_k
        terms = f64(data["steps"][0]["layers"][l - 1]["dC_da_terms"])
        jacobian = ref["sigma_prime"][l].unsqueeze(-1) * model[l].weight.detach()  # d sigma(w a + b) / da
        close(terms, ref["dC_da"][l + 1].unsqueeze(-1) * jacobian)
        close(terms.sum(1), ref["dC_da"][l])
    assert data["steps"][0]["layers"][2]["dC_da_terms"] is None


def test_walk_goes_forward_then_backward():
    model, x, y = random_case([4, 6, 5, 3])
    walk = page_data(bp_torch.explain(model, x, y).to_html(steps=1))["walk"]
    assert [w["title"] for w in walk] == [
        "input",
        "forward, layer 1 of 3",
        "forward, layer 2 of 3",
        "forward, layer 3 of 3",
        "cost",
        "backward, layer 3 of 3 (output layer): (A)",
        "backward, layer 2 of 3 (hidden layer): (B)",
        "backward, layer 1 of 3 (hidden layer): (B) gen.",
        "gradient descent",
    ]
    assert [w["a_known"] for w in walk] == [0, 1, 2, 3, 3, 3, 3, 3, 3]
    assert [w["grad_known"] for w in walk] == [4, 4, 4, 4, 4, 3, 2, 1, 1]
    backward = walk[5:8]
    assert [[v["eq"] for v in w["values"]] for w in backward] == [
        ["(1.3)", "(1.2)", "(1.1)", "(A)", ""],
        ["(2.3.1)", "(2.3.2)", "(2.3)", "(2.2)", "(2.1)", "(B)", ""],
        ["(2.3.1)", "(2.3.2)", "(2.3)", "(2.2)", "(2.1)", "(B) gen.", ""],
    ]
    assert walk[1]["text"] == "z^1 = w^1 a^0 + b^1,  a^1 = sigma(z^1)"


def test_page_is_self_contained():
    report = bp_torch.explain(*mazur_example()[:3])
    page = report.to_html(steps=2, title='</script><script>alert("x")</script> & <!--')
    assert page.startswith("<!DOCTYPE html>") and "__BP_TORCH_PAGE_DATA__" not in page
    # nothing to load: no src or href attribute, no stylesheet link, no CSS url() or @import
    assert not re.search(r"\b(src|href)\s*=", page, re.I)
    assert not re.search(r"<link\b|@import|url\(", page, re.I)
    assert not re.search(r"\b(fetch\s*\(|XMLHttpRequest|WebSocket|EventSource|import\s*\()", page)
    # the title cannot end the data block early: two scripts, and the title comes back as given
    assert page.count("</script>") == 2
    assert page_data(page)["title"] == '</script><script>alert("x")</script> & <!--'


def test_to_html_writes_the_file_and_leaves_model_and_random_stream_alone(tmp_path):
    model, x, y = random_case([3, 4, 2], batch=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = bp_torch.explain(model, x, y)
    rng = torch.random.get_rng_state()
    path = tmp_path / "page.html"
    page = report.to_html(path, steps=4)
    assert path.read_text(encoding="utf-8") == page
    assert torch.equal(torch.random.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    # and the report still describes the model as it was
    close(report.layers[0].weight, before["0.weight"], tol=0)


def test_repr_html_is_the_page_in_an_iframe():
    report = bp_torch.explain(*mazur_example()[:3])
    frame = report._repr_html_()
    match = re.fullmatch(r'<iframe srcdoc="([^"]*)" sandbox="allow-scripts" [^>]*></iframe>', frame)
    assert match and html.unescape(match.group(1)) == report.to_html()


@pytest.mark.parametrize(
    "sizes, batch, match",
    [
        (
            [4, 9, 3],
            None,
            r"at most 8 units per layer and 5 layers of weights \(e.g. \[4, 6, 5, 3\]\); network "
            r"\[4, 9, 3\] has a layer of 9 units",
        ),
        ([784, 30, 10], None, "a layer of 784 units"),
        ([2, 2, 2, 2, 2, 2, 2], None, "has 6 layers of weights"),
        ([3, 4, 2], 9, "at most 8 samples; got 9"),
    ],
)
def test_too_large_for_the_page_is_refused(sizes, batch, match):
    model, x, y = random_case(sizes, batch)
    report = bp_torch.explain(model, x, y)
    with pytest.raises(ValueError, match=match):
        report.to_html()
    shown = report._repr_html_()  # Jupyter gets the reason, not a traceback
    assert shown.startswith("<pre>ExplainReport(") and "<iframe" not in shown
    assert re.search(match, html.unescape(shown))


def test_largest_drawn_networks_are_accepted():
    for sizes, batch in (([4, 6, 5, 3], None), ([8, 8, 8, 8, 8, 8], 8)):
        model, x, y = random_case(sizes, batch)
        assert page_data(bp_torch.explain(model, x, y).to_html(steps=1))["sizes"] == sizes


@pytest.mark.parametrize("steps", [-1, 201, 2.5, True, "3"])
def test_bad_steps_are_refused(steps):
    with pytest.raises(ValueError, match="steps must be a whole number of SGD steps from 0 to 200"):
        bp_torch.explain(*mazur_example()[:3]).to_html(steps=steps)


def test_a_network_that_mixes_biases_and_none_is_stepped_as_plain_sgd():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        bp_torch.SigmoidLinear(3, 4, dtype=torch.float64), bp_torch.SigmoidLinear(4, 2, bias=False, dtype=torch.float64)
    )
    x, y = torch.rand(3, dtype=torch.float64), torch.rand(2, dtype=torch.float64)
    data = page_data(bp_torch.explain(model, x, y).to_html(steps=3, lr=0.5))
    assert len(data["steps"]) == 4
    for step, ref in zip(data["steps"], plain_sgd(*params(model), x, y, 0.5, 3)):
        assert step["cost"]["value"] == pytest.approx(ref["cost"], abs=1e-14)
        close(step["layers"][0]["weight"], ref["weights"][0])
        close(step["layers"][0]["bias"], ref["biases"][0])
        close(step["layers"][1]["weight"], ref["weights"][1])
        assert step["layers"][1]["bias"] is None


def test_non_finite_values_are_refused():
    model, x, y = random_case([2, 3, 2])
    report = bp_torch.explain(model, torch.tensor([float("nan"), 0.5], dtype=torch.float64), y)
    with pytest.raises(ValueError, match="finite numbers"):
        report.to_html(steps=0)


def run_cli(*args, backend):
    return subprocess.run(
        [sys.executable, "-m", "bp_torch.explain", "--backend", backend, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_writes_the_page(backend, tmp_path):
    path = tmp_path / "explain.html"
    result = run_cli("--html", path, "--steps", 3, backend=backend)
    assert result.returncode == 0, result.stderr
    assert f"wrote {path}" in result.stdout
    data = page_data(path.read_text(encoding="utf-8"))
    assert len(data["steps"]) == 4 and data["backend"] == backend and "Mazur" in data["title"]
    # the page's step 1 is the CLI's own gradient-descent step, as printed
    printed = re.search(r"w\^2 <- w\^2 - eta \* dC/dw\^2\s+\[\[(.*?)\],\s+\[(.*?)\]\]", result.stdout, re.S)
    rows = [[float(v) for v in row.split(",")] for row in printed.groups()]
    close(data["steps"][1]["layers"][1]["weight"], rows, tol=1e-9)
    after = float(re.search(r"C after the step\s+(\S+)", result.stdout).group(1))
    assert data["steps"][1]["cost"]["value"] == pytest.approx(after, rel=1e-9)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--sizes", 4, 9, 3],
            "python -m bp_torch.explain: error: the page draws every unit and every weight, so it "
            "takes networks of at most 8 units per layer",
        ),
        (
            ["--checkpoint", "BIG"],
            "network [64, 30, 10] has a layer of 64 units (at most 8); without --html, the "
            "command (and --plot) shows networks of any size",
        ),
        (
            ["--steps", 500],
            "python -m bp_torch.explain: error: argument --steps: expected a whole number from 0 to 200, got '500'",
        ),
        (
            ["--steps", 20, "--no-html"],
            "error: --steps sets the SGD steps of the --html page; give --html PATH.html too",
        ),
    ],
)
def test_cli_refuses_what_the_page_cannot_show(backend, tmp_path, args, message):
    if "BIG" in args:
        torch.save(SigmoidMLP([64, 30, 10]).state_dict(), tmp_path / "big.pt")
        args = ["--checkpoint", tmp_path / "big.pt"]
    path = tmp_path / "explain.html"
    html_option = [] if "--no-html" in args else ["--html", path]
    result = run_cli(*[a for a in args if a != "--no-html"], *html_option, backend=backend)
    assert result.returncode == 2 and result.stdout == ""
    assert message in result.stderr.splitlines()[-1]
    if "--steps" not in args:
        assert len(result.stderr.splitlines()) == 1  # the reason alone, not argparse's usage
    assert not path.exists()


# --------------------------------------------------------------------------------------------------------------------
# The page in a real browser
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser():
    reason = chromium.why_no_browser()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, and the browser tests cannot run: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = chromium.launch(playwright)
        yield instance
        instance.close()


class Page:
    """A Playwright page on one file, recording console messages, page errors and every request made."""

    def __init__(self, browser, path, width=1280):
        self.context = browser.new_context(viewport={"width": width, "height": 1000})
        self.requests, self.console, self.errors = [], [], []
        self.url = pathlib.Path(path).resolve().as_uri()

        def route(route):  # the page's own file loads; anything else is recorded and refused
            self.requests.append(route.request.url)
            route.continue_() if route.request.url == self.url else route.abort()

        self.context.route("**/*", route)
        self.page = self.context.new_page()
        self.page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(self.url)

    def check_clean(self):
        """No error or warning logged, no exception, and no request but the page itself."""
        assert self.errors == []
        assert [m for m in self.console if m.startswith(("error", "warning"))] == []
        assert self.requests == [self.url]

    def close(self):
        self.context.close()


@pytest.fixture
def open_page(browser, tmp_path):
    pages = []

    def open_(report, name="explain.html", width=1280, **to_html):
        path = tmp_path / name
        report.to_html(path, **to_html)
        page = Page(browser, path, width)
        pages.append(page)
        return page

    yield open_
    for page in pages:
        page.check_clean()
        page.close()


# A point on the edge where it is the topmost element (crossing edges share their midpoints), in viewport pixels
EDGE_POINT = """name => {
  const hit = document.querySelector(`.edge-hit[data-name="${name}"]`);
  const length = hit.getTotalLength(), m = hit.getScreenCTM();
  for (const t of [0.5, 0.4, 0.6, 0.3, 0.7, 0.45, 0.55, 0.35, 0.65, 0.25, 0.75, 0.2, 0.8]) {
    const p = hit.getPointAtLength(t * length);
    const x = m.a * p.x + m.c * p.y + m.e, y = m.b * p.x + m.d * p.y + m.f;
    if (document.elementFromPoint(x, y) === hit) return [x, y];
  }
  return null;
}"""


def click_edge(page, l, j, k):
    """A real mouse click on edge w^l_jk; the details panel then names it."""
    name = f"w^{l}_{j}{k}"
    page.locator(f'.edge-hit[data-name="{name}"]').scroll_into_view_if_needed()
    x, y = page.evaluate(EDGE_POINT, name)
    page.mouse.click(x, y)
    assert page.locator("#details h2").text_content() == f"weight {name}"


def click_node(page, l, j):
    page.locator(f'.node[data-name="a^{l}_{j}"]').click()
    assert page.locator("#details h2").text_content() == f"neuron a^{l}_{j}"


def shown(scope, selector, digits=10):
    """The number shown at `selector` (exactly one element): its exact value, from data-value, after checking that
    its text is that value to `digits` significant digits."""
    element = scope.locator(selector)
    assert element.count() == 1, selector
    value = float(element.get_attribute("data-value"))
    assert float(element.text_content()) == pytest.approx(value, rel=10 ** (1 - digits), abs=1e-300), selector
    return value


def row_label(scope, key):
    """The equation label and wording of the details row holding `key`."""
    row = scope.locator(f'#chain tr:has([data-key="{key}"])')
    return row.locator("td.eq").text_content(), row.locator("td").nth(1).text_content()


def test_browser_clicking_an_edge_shows_its_chain(open_page, tmp_path):
    model, x, y, lr = mazur_example()
    report = bp_torch.explain(model, x, y)
    ref = plain_autograd(*params(model), x, y)
    view = open_page(report, steps=20, lr=lr)
    page = view.page
    for l, j, k in [(2, 1, 1), (2, 1, 2), (2, 2, 1), (2, 2, 2), (1, 1, 1), (1, 1, 2), (1, 2, 1), (1, 2, 2)]:
        click_edge(page, l, j, k)
        layer = report.layers[l - 1]
        product, autograd = shown(page, '#details [data-key="product"]'), shown(page, '#details [data-key="autograd"]')
        # the Python report's numbers, exactly, and plain torch autograd's, to rounding
        assert product == layer.dC_dw[j - 1, k - 1].item()
        assert autograd == layer.autograd_dC_dw[j - 1, k - 1].item()
        assert product == pytest.approx(ref["dC_dw"][l - 1][j - 1, k - 1].item(), abs=1e-16)
        assert autograd == pytest.approx(ref["dC_dw"][l - 1][j - 1, k - 1].item(), abs=1e-16)
        assert shown(page, '#details [data-key="abs_diff"]', digits=2) == abs(product - autograd)
        # the three factors, each against its definition
        dz_dw, da_dz, dC_da = (shown(page, f'#chain [data-key="{key}"]') for key in ("dz_dw", "da_dz", "dC_da"))
        assert dz_dw == pytest.approx(ref["a"][l - 1][0, k - 1].item(), abs=1e-16)  # a^(l-1)_k
        assert da_dz == pytest.approx(ref["sigma_prime"][l - 1][0, j - 1].item(), abs=1e-16)  # sigma'(z^l_j)
        assert dC_da == pytest.approx(ref["dC_da"][l][0, j - 1].item(), abs=1e-16)  # dC/da^l_j
        assert product == pytest.approx(dz_dw * da_dz * dC_da, rel=1e-14)
        assert shown(page, '#details [data-key="weight"]') == model[l - 1].weight[j - 1, k - 1].item()
        if l == 2:
            assert [row_label(page, key)[0] for key in ("dz_dw", "da_dz", "dC_da", "product")] == [
                "(1.1)",
                "(1.2)",
                "(1.3)",
                "(A)",
            ]
            assert row_label(page, "dC_da")[1] == "dC/da^2 = a^2 - y"
            assert page.locator("#chain-sum").count() == 0
        else:
            assert [row_label(page, key)[0] for key in ("dz_dw", "da_dz", "dC_da", "product")] == [
                "(2.1)",
                "(2.2)",
                "(2.3)",
                "(B)",
            ]
            # (2.3) = (2.3.1) x (2.3.2), term by term over the output neurons i
            header = page.locator("#chain-sum th").all_text_contents()
            assert header[1].startswith("(2.3.1)") and header[2].startswith("(2.3.2)")
            for i in (1, 2):
                next_grad = shown(page, f'#chain-sum [data-key="dC_da_next"][data-i="{i}"]')
                jacobian = shown(page, f'#chain-sum [data-key="da_next_da"][data-i="{i}"]')
                term = shown(page, f'#chain-sum [data-key="dC_da_term"][data-i="{i}"]')
                assert next_grad == pytest.approx(ref["dC_da"][2][0, i - 1].item(), abs=1e-16)
                assert jacobian == pytest.approx(
                    (ref["sigma_prime"][1][0, i - 1] * model[1].weight[i - 1, j - 1]).item(), abs=1e-16
                )
                assert term == pytest.approx(next_grad * jacobian, rel=1e-14)
            assert shown(page, '#chain-sum [data-key="dC_da_sum"]') == dC_da
    # Mazur's published gradients, dE_total/dw5 and dE_total/dw1
    click_edge(page, 2, 1, 1)
    assert shown(page, '#details [data-key="product"]') == pytest.approx(0.082167041, abs=1e-9)
    click_edge(page, 1, 1, 1)
    assert shown(page, '#details [data-key="product"]') == pytest.approx(0.000438568, abs=1e-9)
    # the highlighted edge, and a screenshot of the whole page
    assert page.locator(".halo.selected").count() == 1
    screenshot = tmp_path / "explain_page.png"
    page.screenshot(path=screenshot, full_page=True)
    data = screenshot.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 20_000


def test_browser_clicking_a_node_shows_z_a_sigma_prime_dC_da(open_page):
    model, x, y, _ = mazur_example()
    report = bp_torch.explain(model, x, y)
    ref = plain_autograd(*params(model), x, y)
    page = open_page(report, steps=2).page
    for l, j in [(1, 1), (1, 2), (2, 1), (2, 2)]:
        click_node(page, l, j)
        assert shown(page, '#node-values [data-key="z"]') == pytest.approx(ref["z"][l - 1][0, j - 1].item(), abs=1e-15)
        assert shown(page, '#node-values [data-key="a"]') == pytest.approx(ref["a"][l][0, j - 1].item(), abs=1e-16)
        assert shown(page, '#node-values [data-key="da_dz"]') == pytest.approx(
            ref["sigma_prime"][l - 1][0, j - 1].item(), abs=1e-16
        )
        assert shown(page, '#node-values [data-key="dC_da"]') == pytest.approx(
            ref["dC_da"][l][0, j - 1].item(), abs=1e-16
        )
        assert shown(page, '#node-values [data-key="dC_db"]') == pytest.approx(
            ref["dC_db"][l - 1][j - 1].item(), abs=1e-16
        )
        assert (
            shown(page, '#node-values [data-key="autograd_dC_db"]') == report.layers[l - 1].autograd_dC_db[j - 1].item()
        )
        assert (page.locator('#node-values [data-key="y"]').count() == 1) == (l == 2)
        # the node's value in the drawing: a^l_j to 4 digits
        assert float(page.locator(f'.node[data-name="a^{l}_{j}"] text').text_content()) == pytest.approx(
            ref["a"][l][0, j - 1].item(), rel=1e-3
        )
    click_node(page, 0, 2)
    assert shown(page, '#node-values [data-key="x"]') == 0.1


def node_state(page, l):
    """'pending' / values shown for each node of layer l, and its highlight class."""
    return [
        (cls.split()[1:] if cls else [])
        for cls in page.locator(f'.node[data-layer="{l}"]').evaluate_all(
            "nodes => nodes.map(n => n.getAttribute('class'))"
        )
    ]


def edge_pending(page, l):
    return page.locator(f'.edge[data-layer="{l}"]').evaluate_all(
        "edges => edges.map(e => e.classList.contains('pending'))"
    )


def test_browser_step_buttons_walk_forward_then_backward(open_page):
    model, x, y = random_case([4, 6, 5, 3], seed=3)
    report = bp_torch.explain(model, x, y)
    ref = plain_autograd(*params(model), x, y)
    view = open_page(report, steps=3)
    page = view.page
    walk = page_data(pathlib.Path(view.url.removeprefix("file://")).read_text())["walk"]
    assert page.locator("#walk-prev").is_disabled()
    for i, entry in enumerate(walk):
        page.locator("#walk-next").click()
        assert page.locator("#walk-title").text_content() == entry["title"]
        assert page.locator("#walk-position").text_content() == f"step {i + 1} of {len(walk)}"
        # forward: a^l is shown up to the layer computed, "?" above it; backward: dC/dw known from the top down
        for l in range(4):
            pending = l > entry["a_known"]
            texts = page.locator(f'.node[data-layer="{l}"] text').all_text_contents()
            assert all(t == "?" for t in texts) if pending else all(t != "?" for t in texts), (entry["title"], l)
        for l in (1, 2, 3):
            assert all(edge_pending(page, l)) == (l < entry["grad_known"]), (entry["title"], l)
            assert any(edge_pending(page, l)) != (l >= entry["grad_known"]), (entry["title"], l)
        # what this step computes is highlighted, what it uses marked, the rest neither
        for l in range(4):
            role = "computed" if l in entry["computed"]["nodes"] else "used" if l in entry["used"]["nodes"] else None
            for classes in node_state(page, l):
                assert ("computed" in classes, "used" in classes) == (role == "computed", role == "used"), (
                    entry["title"],
                    l,
                    classes,
                )
        for l in (1, 2, 3):
            role = "computed" if l in entry["computed"]["edges"] else "used" if l in entry["used"]["edges"] else None
            halos = page.locator(f'.halo[data-layer="{l}"]').evaluate_all(
                "halos => halos.map(h => h.getAttribute('class'))"
            )
            assert halos == [f"halo {role}" if role else "halo"] * len(halos), (entry["title"], l)
        if entry["title"].startswith("forward, layer"):
            l = int(entry["title"].split()[2])
            z = [
                float(v)
                for v in page.locator('#walk-values [data-key="z"]').evaluate_all(
                    "cells => cells.map(c => c.dataset.value)"
                )
            ]
            close(z, ref["z"][l - 1][0], tol=1e-15)
        if entry["title"].startswith("backward, layer 1 "):
            shown_grads = [
                float(v)
                for v in page.locator('#walk-values [data-key="dC_dw"]').evaluate_all(
                    "cells => cells.map(c => c.dataset.value)"
                )
            ]
            close(shown_grads, ref["dC_dw"][0].flatten(), tol=1e-15)
            assert "(2.3.1)" in page.locator("#walk-values").text_content()
    assert page.locator("#walk-next").is_disabled()
    # the last step shows the update's result: step 1's weights
    shown_w3 = [
        float(v)
        for v in page.locator('#walk-values [data-key="weight"]').evaluate_all(
            "cells => cells.map(c => c.dataset.value)"
        )
    ]
    step1 = plain_sgd(*params(model), x, y, 0.5, 1)[1]
    close(shown_w3, torch.cat([w.flatten() for w in step1["weights"]]), tol=1e-14)
    page.locator("#walk-prev").click()
    assert page.locator("#walk-title").text_content() == walk[-2]["title"]
    page.locator("#walk-reset").click()
    assert page.locator("#walk-values").text_content() == ""
    assert not any(edge_pending(page, 1)) and "?" not in page.locator("#network").text_content()


def test_browser_slider_moves_through_the_sgd_steps(open_page):
    model, x, y, lr = mazur_example()
    report = bp_torch.explain(model, x, y)
    states = plain_sgd(*params(model), x, y, lr, 20)
    page = open_page(report, steps=20, lr=lr).page
    slider = page.locator("#sgd-step")
    assert slider.get_attribute("max") == "20"
    click_edge(page, 2, 1, 1)
    costs, widths = {}, {}
    for k, key in [(0, None), (1, "ArrowRight"), (2, "ArrowRight"), (20, "End"), (19, "ArrowLeft")]:
        if key:
            slider.press(key)
        assert page.locator("#sgd-step-label").text_content() == f"{k} of 20"
        costs[k] = shown(page, '#cost [data-key="cost"]')
        assert costs[k] == pytest.approx(states[k]["cost"], abs=1e-14)
        # the weights table and the open chain follow the slider
        for l in (1, 2):
            for j in (1, 2):
                for kk in (1, 2):
                    w = shown(page, f'#weights [data-key="weight"][data-layer="{l}"][data-j="{j}"][data-k="{kk}"]')
                    assert w == pytest.approx(states[k]["weights"][l - 1][j - 1, kk - 1].item(), abs=1e-14)
        assert shown(page, '#details [data-key="product"]') == pytest.approx(
            states[k]["dC_dw"][1][0, 0].item(), abs=1e-15
        )
        assert "at SGD step " + str(k) in page.locator("#details").text_content()
        # the edges' colours and widths follow the gradients
        widths[k] = float(page.locator('.edge[data-name="w^2_11"]').get_attribute("stroke-width"))
    assert costs[0] > costs[1] > costs[2] > costs[19] > costs[20]  # the network learns
    assert widths[0] > widths[20]  # the gradient of w^2_11 shrinks as a^2_1 nears its target


def test_browser_batch_table_has_a_row_per_sample(open_page):
    model, x, y = random_case([3, 4, 2], batch=3, seed=7)
    report = bp_torch.explain(model, x, y)
    ref = plain_autograd(*params(model), x, y)
    page = open_page(report, steps=1).page
    click_edge(page, 1, 2, 3)
    per_sample = [shown(page, f'#chain [data-key="product_per_sample"][data-sample="{s}"]') for s in (1, 2, 3)]
    for s in (1, 2, 3):
        factors = [shown(page, f'#chain [data-key="{key}"][data-sample="{s}"]') for key in ("dz_dw", "da_dz", "dC_da")]
        assert per_sample[s - 1] == pytest.approx(factors[0] * factors[1] * factors[2], rel=1e-13)
        assert factors[2] == pytest.approx(ref["dC_da"][1][s - 1, 1].item(), abs=1e-16)  # carries the 1/3 of the mean
    product = shown(page, '#details [data-key="product"]')
    assert product == pytest.approx(sum(per_sample), abs=1e-16)
    assert product == pytest.approx(ref["dC_dw"][0][1, 2].item(), abs=1e-16)
    assert "3 samples" in page.locator("#subtitle").text_content()


def test_browser_deep_network_edges(open_page):
    model, x, y = random_case([4, 6, 5, 3], seed=1)
    report = bp_torch.explain(model, x, y)
    ref = plain_autograd(*params(model), x, y)
    page = open_page(report, steps=2).page
    assert page.locator(".edge-hit").count() == 4 * 6 + 6 * 5 + 5 * 3
    assert page.locator(".node").count() == 4 + 6 + 5 + 3
    for l, j, k, eq in [(1, 6, 4, "(B) gen."), (2, 3, 5, "(B)"), (3, 2, 1, "(A)")]:
        click_edge(page, l, j, k)
        assert shown(page, '#details [data-key="product"]') == pytest.approx(
            ref["dC_dw"][l - 1][j - 1, k - 1].item(), abs=1e-16
        )
        assert shown(page, '#details [data-key="autograd"]') == report.layers[l - 1].autograd_dC_dw[j - 1, k - 1].item()
        assert row_label(page, "product")[0] == eq
        # (2.3)'s sum has a header, a row per neuron i of layer l + 1, and the sum; the output layer has none
        assert page.locator("#chain-sum tr").count() == (0 if l == 3 else 1 + [5, 3][l - 1] + 1)


def test_browser_notebook_view_works_in_its_iframe(browser, tmp_path):
    model, x, y, _ = mazur_example()
    report = bp_torch.explain(model, x, y)
    path = tmp_path / "notebook.html"
    path.write_text(f"<!DOCTYPE html><html><body>{report._repr_html_()}</body></html>", encoding="utf-8")
    view = Page(browser, path)
    try:
        frame = view.page.frame_locator("iframe")
        frame.locator('.chip[data-name="w^2_11"]').click()  # the gradient's label on the edge
        assert frame.locator("#details h2").text_content() == "weight w^2_11"
        assert shown(frame, '#details [data-key="product"]') == report.layers[1].dC_dw[0, 0].item()
        frame.locator("#walk-next").click()
        assert frame.locator("#walk-title").text_content() == "input"
        view.check_clean()
    finally:
        view.close()


# Everything that could cut a value off: the panels, the walk's boxes and the table cells, and the page itself; then
# every number shown: one line (not broken), inside every box that clips it and inside the window, its text the
# value it stands for; and how many lines each equation label takes.
LAYOUT = """() => {
  const doc = document.documentElement, over = [], cut = [];
  const name = (e) => e.id ? `#${e.id}` : `${e.tagName.toLowerCase()}.${e.className}` +
    (e.closest("[id]") ? ` in #${e.closest("[id]").id}` : "");
  const boxes = document.querySelectorAll("main, #left, #details, #walk-section, #walk, #walk-values, .walk-item, " +
                                          ".walk-label, .walk-value, .matrices, #weights, .block, td, th, .formula");
  for (const box of boxes) {
    if (box.scrollWidth > box.clientWidth) over.push(`${name(box)}: ${box.scrollWidth} > ${box.clientWidth}`);
  }
  if (doc.scrollWidth > doc.clientWidth) over.push(`the page: ${doc.scrollWidth} > ${doc.clientWidth}`);
  const numbers = document.querySelectorAll(".num, .pending-value");
  for (const n of numbers) {
    const rects = n.getClientRects(), r = n.getBoundingClientRect();
    // the text is the value: to the 10 significant digits shown (2 for a difference from autograd)
    const v = Number(n.dataset.value), text = n.textContent, diff = n.dataset.key.includes("diff");
    if (n.classList.contains("num") && !(Math.abs(Number(text) - v) <= (diff ? 0.05 : 5e-10) * Math.abs(v))) {
      cut.push(`${name(n)} shows ${text} for ${n.dataset.value}`);
    }
    if (rects.length !== 1) { cut.push(`${name(n)} ${text} is on ${rects.length} lines`); continue; }
    if (r.left < 0 || r.right > doc.clientWidth) cut.push(`${name(n)} ${text} is outside the window`);
    for (let a = n.parentElement; a && a !== doc; a = a.parentElement) {
      if (getComputedStyle(a).overflowX === "visible") continue;
      const box = a.getBoundingClientRect();
      if (r.left < box.left - 0.5 || r.right > box.right + 0.5) cut.push(`${name(n)} ${text} is cut by ${name(a)}`);
    }
  }
  const lines = (selector) => Math.max(0, ...[...document.querySelectorAll(selector)].map((e) => {
    const range = document.createRange();  // the lines of the text itself, not of its (row-high) cell
    range.selectNodeContents(e);
    return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
  }));
  return { over, cut, numbers: numbers.length, walk_label_lines: lines(".walk-label .label"),
           details_label_lines: lines("#details td.label") };
}"""


def check_layout(page, where):
    layout = page.evaluate(LAYOUT)
    assert layout["over"] == [], where
    assert layout["cut"] == [], where
    assert layout["numbers"] > 0, where
    # long equation labels get room: a walk label on at most two lines, a label in the details on at most three
    assert layout["walk_label_lines"] <= 2, (where, layout["walk_label_lines"])
    assert layout["details_label_lines"] <= 3, (where, layout["details_label_lines"])
    return layout


@pytest.mark.parametrize("width", [1280, 1600])
@pytest.mark.parametrize(
    "sizes, batch",
    [([2, 2, 2], None), ([4, 6, 5, 3], None), ([8, 8, 8, 8], None), ([4, 6, 5, 3], 8), ([8, 8, 8, 8, 8, 8], 8)],
)
def test_browser_layout_cuts_no_value(open_page, sizes, batch, width):
    """Issue 24: at 1280 px and wider, every value of every walk step, of a clicked edge and of a clicked node shows
    in full: no panel or cell overflows, no number is cut, hidden or broken across lines."""
    model, x, y = random_case(sizes, batch, seed=2)
    if sizes == [2, 2, 2] and batch is None:
        model, x, y, _ = mazur_example()
    view = open_page(bp_torch.explain(model, x, y), steps=2, width=width)
    page = view.page
    n_walk = len(page_data(pathlib.Path(view.url.removeprefix("file://")).read_text())["walk"])
    L = len(sizes) - 1
    # a weight of the first layer (the longest chain, with the (2.3) table) and a hidden neuron
    click_edge(page, 1, sizes[1], sizes[0])
    for i in range(n_walk + 1):
        check_layout(page, (sizes, batch, width, "edge", i))
        if i < n_walk:
            page.locator("#walk-next").click()
    click_node(page, L - 1, sizes[L - 1])
    for i in range(n_walk, -1, -1):
        check_layout(page, (sizes, batch, width, "node", i))
        if i > 0:
            page.locator("#walk-prev").click()
    click_node(page, L, sizes[L])  # the output layer's node (y and the bias rows)
    check_layout(page, (sizes, batch, width, "output node"))


def test_browser_details_follow_the_walk(open_page):
    """The clicked node's and edge's details show what the walk has computed so far, and a ? for the rest."""
    model, x, y, _ = mazur_example()
    view = open_page(bp_torch.explain(model, x, y), steps=1)
    page = view.page
    walk = page_data(pathlib.Path(view.url.removeprefix("file://")).read_text())["walk"]

    def pending(keys):
        return {
            key: page.locator(f'#details [data-key="{key}"]').first.get_attribute("data-pending") is not None
            for key in keys
        }

    status = page.locator("#details-status")
    click_node(page, 1, 1)
    assert status.text_content().startswith("The finished pass")
    assert not any(pending(["z", "a", "da_dz", "dC_da", "dC_db", "bias"]).values())
    for i, entry in enumerate(walk):
        page.locator("#walk-next").click()
        assert status.text_content().startswith(f"At walk step {i + 1} of {len(walk)} ({entry['title']})")
        for l in (1, 2):
            click_node(page, l, 2)
            forward, backward = l > entry["a_known"], l < entry["grad_known"]
            assert pending(["z", "a", "da_dz", "dC_da", "dC_db", "autograd_dC_db", "bias"]) == {
                "z": forward,
                "a": forward,
                "da_dz": backward,
                "dC_da": backward,
                "dC_db": backward,
                "autograd_dC_db": backward,
                "bias": False,
            }, (entry["title"], l)
            if not forward:  # what is shown is the value itself
                assert shown(page, '#node-values [data-key="a"]') == pytest.approx(
                    torch.sigmoid(F.linear(x, model[0].weight, model[0].bias)).tolist()[1]
                    if l == 1
                    else model(x).tolist()[1],
                    abs=1e-15,
                )
        click_edge(page, 1, 2, 1)  # w^1_21: its dz/dw is a^0, known from the start; the rest from layer 1's step
        backward = entry["grad_known"] > 1
        from_backward = (
            "da_dz",
            "dC_da",
            "product",
            "autograd",
            "abs_diff",
            "dC_da_next",
            "da_next_da",
            "dC_da_term",
            "dC_da_sum",
        )
        assert pending(["weight", "dz_dw", *from_backward]) == {
            "weight": False,
            "dz_dw": False,
            **dict.fromkeys(from_backward, backward),
        }, entry["title"]
        if backward:
            assert page.locator('#details [data-key="product"]').text_content() == "?"
    page.locator("#walk-reset").click()
    assert status.text_content().startswith("The finished pass")
    assert shown(page, '#details [data-key="product"]') == pytest.approx(0.000498, abs=1e-6)  # Mazur's dE/dw3


def test_browser_cross_entropy_node_shows_delta_beside_the_quadratic_delta(open_page):
    """With the cross-entropy cost, an output node shows delta^L = a^L - y (3.3) beside (a^L - y) sigma'(z^L)."""
    model, x, y, _ = mazur_example()
    report = bp_torch.explain(model, x, y, cost=bp_torch.CrossEntropyCost())
    page = open_page(report, steps=2).page
    assert "cross-entropy cost" in page.locator("#subtitle").text_content()
    a = report.layers[1].a[0]
    for j in (1, 2):
        click_node(page, 2, j)
        error = (a[j - 1] - y[j - 1]).item()
        assert shown(page, '#node-values [data-key="delta"]') == pytest.approx(error, abs=1e-15)
        assert shown(page, '#node-values [data-key="quadratic_delta"]') == pytest.approx(
            error * (a[j - 1] * (1 - a[j - 1])).item(), abs=1e-15
        )
        assert "a^2 - y" in page.locator('#node-values tr:has([data-key="delta"])').text_content()
    click_node(page, 1, 1)
    assert page.locator('#node-values [data-key="delta"]').count() == 0
