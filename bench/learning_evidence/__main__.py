"""``python -m bench.learning_evidence ...``: the learning bench's command line."""

from bench.learning_evidence.cli import main

main()
