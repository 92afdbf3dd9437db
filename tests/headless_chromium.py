"""A real headless browser for the tests of bp_torch.explain's page: Playwright (PyPI) driving Debian's chromium.

`playwright install`, which downloads Playwright's own browser build, is not needed: .ci/run installs Debian's
chromium with apt-get, and the tests launch that binary. BP_TORCH_CHROMIUM names another one.
Also used by scripts/explain_page_screenshot.py, so that the README's screenshot comes from the same browser.
"""

import os

CHROMIUM = os.environ.get("BP_TORCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # no sandbox: CI runs as root, where chromium's sandbox refuses to start
    "--disable-gpu",
    "--no-first-run",
    # a test must not talk to the network: without these, chromium calls Google's servers at start
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def why_no_browser():
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as err:
        return f"playwright is not importable ({err}); it is pinned in requirements.txt"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no chromium at {CHROMIUM} (apt-get install chromium, as .ci/run does; or set BP_TORCH_CHROMIUM)"
    return None


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
