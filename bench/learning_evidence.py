"""Does it learn? The learning bench's command line (``python bench/learning_evidence.py --preset smoke``).

The bench itself is the package next to this file, ``bench/learning_evidence/`` (its docstring lists the presets);
this file keeps the documented command working when run from the repository root or anywhere else.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, so that ``bench`` is importable
    from bench.learning_evidence.cli import main

    main()
