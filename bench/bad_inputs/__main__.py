"""``python -m bench.bad_inputs``: see the package docstring."""

import sys

from bench.bad_inputs.cli import main

sys.exit(main())
