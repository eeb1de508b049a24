"""Bad inputs to the evaluators and the hub entries, tried as a user would, with each outcome classified.

Every case runs a real command (``python -m eval.<tool> ...``, or a call of a hub entry) on tiny fixtures built
here (vit_pico/8 checkpoints; Pascal VOC, COCO and DAVIS trees of a few images; a training log) and is classified:

* ``correct``: exit 0 and the result checks out (files written where announced, scores finite and in range, a
  warning with a count where inputs were mended, the same numbers as an equivalent well-formed input);
* ``error``: a clear one-line error: exit != 0, one ``error:`` line on stderr naming the file or flag at fault
  (flags it names exist in that tool), no traceback, no internal wording (hub entries: an exception of a user-facing
  type whose one-line message names the argument or file);
* ``defective``: anything else: a traceback, a misleading or path-less message, a silent wrong number, an
  announced file that is not there, a write over the inputs, a hang.

    python -m bench.bad_inputs                  # whole table, 2 cases at a time: clean / defective counts
    python -m bench.bad_inputs --only video --jobs 1 --json out/bad_inputs.json
    python -m bench.bad_inputs --subprocess     # one fresh interpreter per case (slower; same classification)

By default a case runs in a child forked from this process after the evaluators are imported (the same code path
as ``python -m``, without paying the import time 250 times); ``--subprocess`` starts a real interpreter per case.

Layout: ``fixtures`` builds the shared inputs and the private copies a case edits; ``commands`` the base command
lines; ``checks`` what makes a successful run correct; ``cases_*`` the table, one module per group of causes;
``runner`` runs the cases (forked children or subprocesses, timeouts, input hashes); ``classify`` the outcome
rules; ``report`` the table, the counts and the JSON file; ``cli`` the command line.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
