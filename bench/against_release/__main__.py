"""``python -m bench.against_release ...``: the side-by-side comparison with the released code."""

from bench.against_release.cli import main

main()
