"""eval/video_segmentation.py: label propagation against slow loops, the palette and frame size, the official-layout
result tables and a first frame with nothing to propagate."""

import argparse
import math

import numpy as np
import pytest
import torch

from croc_utils.cli import UsageError, run_cli
from eval.seg_datasets import DAVIS2017
from eval.video_segmentation import (
    davis_palette,
    get_args_parser,
    main,
    nan_to_none,
    neighborhood_mask,
    propagate,
    segment_sequence,
    target_size,
    write_official_tables,
)
from tests.trees import blank_first_annotation, make_davis


def test_official_tables_layout(tmp_path):
    stats = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
    scores = {"J&F-Mean": 0.61234, "J-Mean": 0.5, "J-Recall": 2 / 3, "J-Decay": -0.0625, "F-Mean": 0.72468,
              "F-Recall": math.nan, "F-Decay": 0.0,
              "per_object": {"bike_1": dict(zip(stats, (0.1235, 1.0, 0.0, 0.98765, 1.0, 0.0))),
                             "bike_2": dict(zip(stats, (1 / 3, 0.0, 0.0, math.nan, 0.0, 0.0))),
                             "my,seq_1": dict(zip(stats, (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)))}}
    paths = write_official_tables(scores, tmp_path, "val")
    assert [p.name for p in paths] == ["global_results-val.csv", "per-sequence_results-val.csv"]
    # Written by hand from the official evaluation_method.py: pandas to_csv(index=False, float_format="%.3f"),
    # so 3 decimals, NaN as an empty field, a name holding a comma quoted, "\n" line ends.
    assert paths[0].read_bytes() == (b"J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n"
                                     b"0.612,0.500,0.667,-0.062,0.725,,0.000\n")
    assert paths[1].read_bytes() == (b"Sequence,J-Mean,F-Mean\n"
                                     b"bike_1,0.123,0.988\n"
                                     b"bike_2,0.333,\n"
                                     b'"my,seq_1",0.000,0.000\n')


def test_nan_to_none_makes_standard_json():
    assert nan_to_none({"a": [1.0, math.nan], "b": {"c": math.nan, "d": "x"}}) == {"a": [1.0, None],
                                                                                    "b": {"c": None, "d": "x"}}


class NoBackbone:
    """A model that must not be run: its only attribute is the patch size."""
    patch_size = 16


def test_first_frame_without_objects_propagates_nothing(tmp_path, capsys):
    make_davis(tmp_path, seqs=("empty", "dog"), n_frames=3)  # a list with no object at all is refused
    blank_first_annotation(tmp_path, "empty")
    args = argparse.Namespace(short_side=64, size_mask_neighborhood=1, device="cpu", n_last_frames=7, topk=2,
                              temperature=0.1)
    preds = segment_sequence(NoBackbone(), DAVIS2017(tmp_path), "empty", args)
    assert len(preds) == 3 and preds[0].max() == 255  # the first frame's own annotation, void kept
    assert all(p.shape == (8, 10) and p.dtype == np.uint8 and not p.any() for p in preds[1:])
    assert "empty: the first annotation has no object; nothing to propagate" in capsys.readouterr().out


def slow_propagate(target, ctx_feats, ctx_labels, topk, temperature, allowed):
    m, _, n = ctx_feats.shape
    out = torch.zeros(ctx_labels.shape[1], n)
    for t in range(n):
        scores = [(math.exp(float(target[:, t] @ ctx_feats[i, :, s]) / temperature) * float(allowed[t, s]), i, s)
                  for i in range(m) for s in range(n)]
        kth = sorted((v for v, _, _ in scores), reverse=True)[topk - 1]
        kept = [(v, i, s) for v, i, s in scores if v >= kth]
        total = sum(v for v, _, _ in kept)
        for v, i, s in kept:
            out[:, t] += v / total * ctx_labels[i, :, s]
    return out


def test_propagate_matches_slow_loops():
    g = torch.Generator().manual_seed(0)
    h, w, m = 3, 4, 2
    norm = torch.nn.functional.normalize
    target = norm(torch.randn(5, h * w, generator=g), dim=0)
    ctx = norm(torch.randn(m, 5, h * w, generator=g), dim=1)
    labels = torch.softmax(torch.randn(m, 3, h * w, generator=g), dim=1)
    allowed = neighborhood_mask(h, w, 1)
    rows, cols = np.divmod(np.arange(h * w), w)
    ref_mask = (np.abs(rows[:, None] - rows[None]) <= 1) & (np.abs(cols[:, None] - cols[None]) <= 1)
    assert np.array_equal(allowed.numpy(), ref_mask)
    fast = propagate(target, ctx, labels, topk=3, temperature=0.1, neighborhood=allowed)
    torch.testing.assert_close(fast, slow_propagate(target, ctx, labels, 3, 0.1, allowed), atol=1e-5, rtol=1e-4)


def test_davis_palette_and_frame_size():
    pal = davis_palette()
    assert pal[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert pal[255].tolist() == [224, 224, 192]  # VOC's boundary colour
    assert target_size(480, 854) == (480, 832)
    assert target_size(854, 480) == (832, 480)


def davis_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, get_args_parser(), argv)
    err = capsys.readouterr().err
    assert exit_info.value.code in (1, 2) and err.count("\n") == 1 and "video_segmentation: error:" in err, err
    return err


def test_results_never_go_into_the_dataset_folders(tmp_path, capsys):
    make_davis(tmp_path / "DAVIS", seqs=("bike",), n_frames=3)
    annotations = tmp_path / "DAVIS" / "Annotations" / "480p"
    before = {p: p.read_bytes() for p in annotations.rglob("*.png")}
    (tmp_path / "link").symlink_to(annotations)
    base = ["--arch", "vit_pico", "--patch_size", "8", "--device", "cpu", "--data_path", str(tmp_path / "DAVIS"),
            "--short_side", "64"]
    for out in (annotations, tmp_path / "link", tmp_path / "DAVIS" / "JPEGImages" / "480p" / "bike"):
        err = davis_error(capsys, [*base, "--output_dir", str(out)])
        assert f"--output_dir {out} is in the input folder" in err
    assert {p: p.read_bytes() for p in annotations.rglob("*.png")} == before


@pytest.mark.parametrize("flag, value", [("--topk", "0"), ("--temperature", "0"), ("--temperature", "nan"),
                                         ("--n_last_frames", "-1"), ("--size_mask_neighborhood", "-1"),
                                         ("--short_side", "0"), ("--device", "gpu")])
def test_propagation_flags_out_of_range_stop_before_any_work(tmp_path, capsys, flag, value):
    err = davis_error(capsys, ["--data_path", str(tmp_path / "nowhere"), flag, value])
    assert f"argument {flag}:" in err


def test_topk_above_the_patches_of_a_frame(tmp_path):
    make_davis(tmp_path, seqs=("dog",), n_frames=3)
    args = argparse.Namespace(short_side=64, size_mask_neighborhood=1, device="cpu", n_last_frames=7, topk=17,
                              temperature=0.1)  # 64 x 64 inputs: 4 x 4 patches of 16 px
    with pytest.raises(UsageError, match="--topk 17 exceeds the 16 patches"):
        segment_sequence(NoBackbone(), DAVIS2017(tmp_path), "dog", args)
