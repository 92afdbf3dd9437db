"""scripts/env.sh run from another directory (issue 24): the command runs where the user is, so relative paths mean
what they typed, and this checkout's bp_torch is the one imported.

These tests call env.sh on the venv the suite itself runs in, so they need that venv already made and this
checkout's build key already written (build/.bp_torch-build-key); elsewhere (a plain `pip install` environment, the
sanitizer build's copy of the tree) they skip rather than create a venv or rebuild the extension. They do not depend
on the backend, so they run once, under "python".
"""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV_SH = ROOT / "scripts" / "env.sh"

pytestmark = pytest.mark.backends("python")


def env_sh(*command, cwd):
    venv = pathlib.Path(sys.prefix)
    if not venv.name.startswith("venv-") or not (ROOT / "build" / ".bp_torch-build-key").exists():
        pytest.skip("not running in a venv made by scripts/env.sh for this checkout")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BP_TORCH_BACKEND")}
    env["BP_TORCH_CACHE"] = str(venv.parent)  # the same venv: nothing to install
    return subprocess.run(
        ["bash", str(ENV_SH), *map(str, command)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_command_runs_in_the_callers_directory_with_this_checkout_first(tmp_path):
    result = env_sh(
        "python",
        "-c",
        "import os, bp_torch; print(os.getcwd()); print(bp_torch.__file__); print(os.environ['PYTHONPATH'])",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    cwd, module, pythonpath = result.stdout.splitlines()
    assert pythonpath == str(ROOT)
    assert pathlib.Path(cwd) == tmp_path
    assert pathlib.Path(module) == ROOT / "bp_torch" / "__init__.py"
    assert "note:" not in result.stderr


def test_relative_paths_are_the_callers(tmp_path):
    (tmp_path / "my_script.py").write_text("import sys, bp_torch\nopen(sys.argv[1], 'w').write(bp_torch.__file__)\n")
    (tmp_path / "out").mkdir()
    result = env_sh("python", "my_script.py", "out/made.txt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "made.txt").read_text() == str(ROOT / "bp_torch" / "__init__.py")
    assert not (ROOT / "out").exists()
    # a module's output path too: `python -m bp_torch.explain --html page.html` writes page.html here
    result = env_sh("python", "-m", "bp_torch.explain", "--html", "page.html", "--steps", "0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote page.html" in result.stdout
    assert (tmp_path / "page.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not (ROOT / "page.html").exists()


def test_another_bp_torch_in_the_callers_directory_is_named(tmp_path):
    """python -c puts the current directory first, before PYTHONPATH: env.sh says which bp_torch will be found."""
    (tmp_path / "bp_torch").mkdir()
    (tmp_path / "bp_torch" / "__init__.py").write_text("WHICH = 'the caller'\n")
    result = env_sh("python", "-c", "import bp_torch; print(bp_torch.WHICH)", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "the caller"
    assert f"note: {tmp_path}/bp_torch comes before {ROOT}/bp_torch" in result.stderr
