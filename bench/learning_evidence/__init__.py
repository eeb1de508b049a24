"""Does it learn? CrOC vs DINO-only vs random init, equal budget, probed along training, with floors and a ceiling.

Trains CrOC (``--alpha_s 1``) and DINO-only (``--alpha_s 0``, everything else identical: seed, data, views, images
seen) by running ``main_croc.py`` through its command line, then probes the teacher of every ``--saveckp_freq``
checkpoint of both runs with ``eval.probe`` (linear probe, K-means; mean +- std over the probe seeds), beside
references probed the same way on the same scenes (``eval.probe_baselines``): random init (same architecture and
seed), the floors (majority class, mean colour, raw pixels, |FFT| of each patch) and the supervised ceiling (the same
ViT trained with the patch labels for the same number of images). Writes ``learning_evidence.json``,
``learning_evidence.md`` (also printed) and a figure of probe mIoU vs images seen into ``--output_dir`` (default
``~/.cache/croc/learning_evidence/<preset>``); ``--publish`` also copies them to the repository's ``figures/``.

    python bench/learning_evidence.py --preset smoke     # CPU, about a minute (tests/test_learning_evidence.py)
    python bench/learning_evidence.py --preset ci        # one CrOC run, <= 3 min on 2 cores (tests/test_learning.py)
    python bench/learning_evidence.py --preset dev       # one CrOC run, <= 5 min on 2 cores, dev split (recipes)
    python bench/learning_evidence.py --preset cpu       # <= 30 min on an idle 2-core CPU, val split
    python bench/learning_evidence.py --preset gpu       # <= 8 min on one H200: the texture and the shape style
    python bench/learning_evidence.py --sweep            # the dev preset for every SWEEP configuration, tabulated

(``python -m bench.learning_evidence ...`` is the same.) Rerunning resumes: a finished training run is not repeated
(``main_croc.py`` resumes from its checkpoint), and a sweep configuration whose flags and probe settings are unchanged
is read back from its cached result.

Modules: ``flags`` (the typed main_croc.py flags), ``presets`` (budgets, the sweep's configurations), ``runner``
(training processes), ``probes`` (what is measured: ``EVALUATIONS``), ``report`` and ``figure`` (pure outputs),
``sweep``, ``cli``.
"""
