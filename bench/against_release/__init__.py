"""This repository's training step against the authors' released code, side by side, on a CPU, in one command.

    git clone https://github.com/stegmuel/CrOC /tmp/CrOC          # the released code, unmodified
    pip install einops                                            # the one package it needs that we do not
    python bench/against_release.py --release_dir /tmp/CrOC       # about 270 s of CPU time in all

The released code is imported from ``--release_dir`` at run time (its packages ``croc_utils``, ``models``, ``utils``
share names with ours, so it is loaded into a separate namespace) and made to run on a CPU without editing its
files: its ``.cuda()`` calls and tensors created on ``device='cuda'`` stay on the CPU, a one-process gloo group
serves its ``torch.distributed`` calls, and the 10000 x 10000 coordinate grid its crop transform allocates (800 MB)
is built only as large as the images. Then:

1. **Whole steps.** One checkpoint in the released layout (a student perturbed away from the teacher, random
   centres) is loaded by each side's own loading code; each side's own ``train_one_epoch`` then trains 3 epochs of
   2 steps on the same batches (made by the released augmentation) with the same random state at every step:
   lr warm-up from 0, ``--freeze_last_layer 1``, per-parameter clipping that clips, EMA, both centres, teacher
   temperature warm-up. After every step the maximum relative difference of the loss and its two terms, the
   gradients the optimizer receives, the student and teacher weights, both centres and the lr / wd / momentum used
   is printed; past its tolerance, the command exits 1 naming the quantity.
2. **Clustering alone.** Random problems (several k, merging, narrow plans, uniform marginals) through both
   clusterings from the same random state: chosen k, hard assignments, valid clusters and cluster tokens.
3. **Speed.** One training step of each side (vit_small, 224 px, batch 8, float32, the batch already in memory),
   alternated, median of ``--speed_repeats``; ms and the ratio.

Relative difference of two tensors: ||a - b|| / ||a|| (L2 over the tensor), then the maximum over the tensors of a
quantity (e.g. every weight of the student); of two numbers |a - b| / |a|. The known
slice: the key third of every ``qkv`` bias has a gradient of exactly 0 (a key bias adds the same amount to every
logit of a query, which the softmax removes); both codes compute it as float rounding noise, which AdamW then
normalises into updates of up to about lr per step. That slice is compared separately: its gradient must stay
noise (below 1e-4 of the qkv-bias gradient) and its weights may differ by at most the sum of the lrs.

(``python -m bench.against_release ...`` is the same.) Modules: ``release`` (the released code, loaded and run on a
CPU), ``batches`` (the same batches in both formats), ``recording`` (hooks that record a step), ``sides`` (each code
training from one checkpoint), ``compare`` (relative differences, tolerances, verdict), ``steps`` (the whole-step
comparison), ``clustering``, ``speed``, ``cli``.
"""
