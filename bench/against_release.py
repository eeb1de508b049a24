"""This repository's training step against the authors' released code, side by side, on a CPU, in one command.

    python bench/against_release.py --release_dir /tmp/CrOC       # an unmodified clone of the released code

The bench itself is the package next to this file, ``bench/against_release/`` (its docstring says what is compared
and how the released code runs on a CPU); this file keeps the documented command working from anywhere.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # "ours": the checkout this file lies in
    from bench.against_release.cli import main

    main()
