"""The example's user errors: one line, ``PROGRAM: error: ...``, exit status 2, no traceback."""

import os

USAGE_ERROR = 2  # argparse's exit status for its own errors


class UserError(Exception):
    """A dataset that is not there, a bad combination of flags, a file that cannot be written: reported as one line,
    ``train_digits.py: error: ...``, with exit status 2 (argparse's, for its own errors), without a traceback."""


def need_matplotlib(option):
    """Raise UserError, naming the extra that installs it, unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise UserError(
            f"{option} needs matplotlib, which is not installed ({err}): "
            f"pip install 'bp_torch[plot]' (or pip install matplotlib)"
        ) from None


def check_output_paths(args):
    """Before training: every output file's folder exists (a run of minutes should not end in a failed write)."""
    for option in ("metrics_json", "plot", "save"):
        path = getattr(args, option)
        folder = os.path.dirname(path) if path else ""
        if folder and not os.path.isdir(folder):
            raise UserError(f"--{option.replace('_', '-')} {path}: there is no folder {folder}")
