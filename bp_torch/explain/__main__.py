"""``python -m bp_torch.explain``: the worked example, term by term (see :func:`bp_torch.explain.main`)."""

import sys

from bp_torch.explain import main

try:
    sys.exit(main())
except BrokenPipeError:  # piped into head, say: stop quietly, as command-line tools do
    sys.stdout = None
    sys.exit(1)
