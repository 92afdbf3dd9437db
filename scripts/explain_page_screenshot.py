"""The README's screenshots of bp_torch.explain's page, at 1280 px: Mazur's 2-2-2 network, the hidden weight w^1_11
clicked, the walk at its backward step through layer 1 (equation (B)); and the same for a random 4-6-5-3 network,
w^1_64 clicked (equation (B) generalised).

    bash scripts/env.sh python scripts/explain_page_screenshot.py [docs/images/explain_page.png [..._deep.png]]

Uses the browser the tests use (tests/headless_chromium.py: Playwright driving Debian's chromium), and fails if the
page logs an error or asks for anything over the network.
"""

import io
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from PIL import Image  # noqa: E402  (Pillow, which matplotlib requires)
from playwright.sync_api import sync_playwright  # noqa: E402

import bp_torch  # noqa: E402
from bp_torch.explain import mazur_example  # noqa: E402

import headless_chromium  # noqa: E402

IMAGES = ROOT / "docs" / "images"


def screenshot(browser, report, lr, title, edge, out):
    """The page of ``report`` at 1280 px, ``edge`` clicked, the walk at its backward step through layer 1."""
    with tempfile.TemporaryDirectory() as tmp:
        page_path = pathlib.Path(tmp) / "explain.html"
        report.to_html(page_path, steps=20, lr=lr, title=title)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        problems = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url == page_path.as_uri()
                else (problems.append(f"request: {route.request.url}"), route.abort())
            ),
        )
        page.goto(page_path.as_uri())
        page.locator(f'.edge-hit[data-name="{edge}"]').dispatch_event("click")
        walk_titles = page.locator("#walk-title")
        while not walk_titles.text_content().startswith("backward, layer 1 "):
            page.locator("#walk-next").click()
        png = page.screenshot(full_page=True)
        page.close()
    if problems:
        raise SystemExit("error: " + "; ".join(problems))
    # A 256-colour palette keeps the picture as it is (flat colours, text) at a third of chromium's file size
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(out, optimize=True)
    print(f"wrote {out} ({pathlib.Path(out).stat().st_size // 1024} KB)")


def main(out=IMAGES / "explain_page.png", deep_out=IMAGES / "explain_page_deep.png"):
    """Mazur's 2-2-2 with w^1_11 clicked (the README's picture), and a random 4-6-5-3 with w^1_64 clicked."""
    reason = headless_chromium.why_no_browser()
    if reason:
        raise SystemExit(f"error: {reason}")
    model, x, y, lr = mazur_example()
    mazur = bp_torch.explain(model, x, y)
    torch.manual_seed(1)
    deep = bp_torch.SigmoidMLP([4, 6, 5, 3], dtype=torch.float64)
    deep_report = bp_torch.explain(deep, torch.rand(4, dtype=torch.float64), torch.rand(3, dtype=torch.float64))
    with sync_playwright() as playwright:
        browser = headless_chromium.launch(playwright)
        screenshot(
            browser,
            mazur,
            lr,
            "the worked example of Mazur, 'A Step by Step Backpropagation Example' (2015)",
            "w^1_11",
            out,
        )
        screenshot(browser, deep_report, 0.5, "random weights (nn.Linear's initialisation), seed 1", "w^1_64", deep_out)
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
