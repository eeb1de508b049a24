"""bench/learning_evidence report and figure: pure functions from measured curves to the table, the gaps, the
summary, the sweep table and the figure's data (no training, no probe)."""

import math

from bench.learning_evidence import figure, report
from bench.learning_evidence.probes import COLUMNS, EVALUATIONS, Column


def _summary(mean, std):
    return {"miou_mean": mean, "miou_std": std, "mious": [mean - std, mean + std],
            "runs": [{"seed": 0, "miou": mean / 100, "weight_decay": 1e-4, "per_class": [1, 2, 3]}]}


def _point(seen, linear, kmeans=None):
    return {"images_seen": seen, "epoch": seen // 32, "linear": _summary(*linear),
            "kmeans": {str(k): _summary(*v) for k, v in (kmeans or {}).items()}}


CURVES = {
    "random": [_point(0, (10.0, 1.0), {7: (16.0, 2.0), 100: (28.0, 1.0)})],
    "croc": [_point(32, (12.0, 0.5), {7: (19.0, 0.2), 100: (29.5, 4.0)}),
             _point(64, (14.5, 0.25), {7: (20.0, 1.6), 100: (30.75, 1.75)})],
    "dino": [_point(32, (11.0, 0.3)), _point(64, (13.0, 0.4))],
    "majority": [_point(0, (2.5, 0.0))],
    "fft": [_point(0, (18.5, 1.3), {7: (23.0, 0.3), 100: (44.7, 5.7)})],
    "supervised": [_point(64, (30.0, 2.0))],
}


def test_markdown_table_lines_in_run_order_with_dashes_for_unmeasured():
    lines = report.markdown_table(CURVES).splitlines()
    assert lines[0] == ("| backbone | images seen | linear probe mIoU | K-means K=#classes | K-means K=100 | "
                        "NN retrieval mIoU |")
    assert lines[2] == "| random init | 0 | 10.00 +- 1.00 | 16.00 +- 2.00 | 28.00 +- 1.00 | - |"
    assert lines[4] == "| CrOC (alpha_s 1) | 64 | 14.50 +- 0.25 | 20.00 +- 1.60 | 30.75 +- 1.75 | - |"
    assert lines[5] == "| DINO-only (alpha_s 0) | 32 | 11.00 +- 0.30 | - | - | - |"
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        "| random init", "| CrOC (alpha_s 1)", "| CrOC (alpha_s 1)", "| DINO-only (alpha_s 0)",
        "| DINO-only (alpha_s 0)", "| floor: majority class", "| floor: \\|FFT\\| of each patch",
        "| ceiling: supervised, same budget"]


def test_labels_carry_the_trained_alpha_s():
    assert report.run_labels(None) is report.LABELS and report.run_labels(1.0) is report.LABELS
    assert report.run_labels(3.0)["croc"] == "CrOC (alpha_s 3)"
    assert report.run_labels(0.5)["croc"] == "CrOC (alpha_s 0.5)"
    assert "| CrOC (alpha_s 3) | 64 |" in report.markdown_table(CURVES, report.run_labels(3.0))


def test_gaps_compare_final_linear_means_with_the_larger_std():
    gaps = report.gaps(CURVES)
    assert gaps["linear_final"] == {"random": 10.0, "croc": 14.5, "dino": 13.0, "majority": 2.5, "fft": 18.5,
                                    "supervised": 30.0}
    assert gaps["croc_minus_random"] == 4.5 and gaps["croc_minus_random_max_std"] == 1.0
    assert gaps["croc_minus_dino"] == 1.5 and gaps["croc_minus_dino_max_std"] == 0.4
    assert gaps["supervised_minus_croc"] == 15.5
    assert "dino_minus_random" in report.gaps({k: CURVES[k] for k in ("random", "dino")})
    assert set(report.gaps({"random": CURVES["random"]})) == {"linear_final"}


def test_summary_and_strip_runs():
    text = report.summary("TABLE", report.gaps(CURVES), {"train": 37.4, "evaluate": 300.6, "total": 338.0}, "x.png")
    assert text.startswith("TABLE\n\nlinear-probe gaps at the last point (mIoU points): croc_minus_random +4.50, ")
    assert "max_std" not in text and text.endswith("time: train 37 s, evaluate 301 s, total 338 s; figure x.png")
    slim = report.strip_runs(CURVES)
    assert slim["croc"][1]["linear"]["per_seed"] == [{"seed": 0, "miou": 0.145, "weight_decay": 1e-4}]
    assert "runs" not in slim["croc"][1]["linear"] and "runs" not in slim["random"][0]["kmeans"]["7"]
    assert slim["croc"][1]["linear"]["miou_mean"] == 14.5 and "runs" in CURVES["croc"][1]["linear"]  # a copy


def test_epoch_stats_reads_the_line_of_the_epoch_that_ended_at_each_checkpoint():
    log = [{"epoch": 0, "train_ent": 1.0, "train_mean_k": 3.0}, {"epoch": 1, "train_ent": 2.0}]
    stats = report.epoch_stats(log, [{"epoch": 1}, {"epoch": 2}, {"epoch": 5}])
    assert [s["train_ent"] for s in stats] == [1.0, 2.0, None]
    assert stats[0]["train_mean_k"] == 3.0 and stats[1]["train_mean_k"] is None
    assert set(stats[0]) == set(report.STAT_KEYS)


def test_sweep_row_and_table():
    result = {"point": {**CURVES["croc"][1], "train_stats": {"train_ent": 5.5, "train_collapse": 0}},
              "random": 10.0, "train_seconds": 123.4}
    row = report.sweep_row("lr_x4", "--lr 0.008", result)
    assert (row["linear"], row["std"], row["minus_random"], row["ent_c"]) == (14.5, 0.25, 4.5, None)
    assert report.sweep_row("base", "", result)["flags"] == "(dev preset)"
    lines = report.sweep_table([row], (10.0, 1.0)).splitlines()
    assert lines[0] == "random init: 10.00 +- 1.00"
    assert lines[-1] == "| lr_x4 | `--lr 0.008` | 14.50 +- 0.25 | +4.50 | 5.50 / - | - / - | 0 / - | 123 |"


def test_figure_panels_start_trained_runs_at_random_init_and_draw_references_flat():
    panels = figure.panels(CURVES)
    assert [p["title"] for p in panels] == ["linear probe", "K-means K=#classes", "K-means K=100",
                                            "NN retrieval (k=30)"]
    linear = {line["run"]: line for line in panels[0]["lines"]}
    assert list(linear) == ["random", "fft", "supervised", "croc", "dino"]  # the best floor only
    assert linear["croc"]["x"] == [0.0, 32.0, 64.0] and linear["croc"]["mean"] == [10.0, 12.0, 14.5]
    assert linear["croc"]["std"] == [1.0, 0.5, 0.25] and linear["croc"]["style"] == "-o"
    assert linear["supervised"]["x"] == [0.0, 64.0] and linear["supervised"]["mean"] == [30.0, 30.0]
    assert linear["fft"]["label"] == "floor: |FFT| of each patch" and linear["fft"]["colour"] == "tab:olive"
    kmeans = {line["run"] for line in panels[1]["lines"]}
    assert kmeans == {"random", "fft", "croc"}  # dino and the ceiling have no K-means here: no line
    no_random = figure.panels({"croc": CURVES["croc"]})
    assert no_random[0]["lines"][0]["x"] == [32.0, 64.0]


def test_draw_writes_a_png(tmp_path):
    path = tmp_path / "sub" / "f.png"
    figure.draw(figure.panels(CURVES), path, "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_one_more_column_reaches_table_and_figure():
    """The extension point: a column reading a new point entry appears in the table and as a figure panel."""
    extra = Column("extra", "extra mIoU", "extra", lambda p: (
        (p["extra"], 0.0) if "extra" in p else (math.nan, math.nan)))
    curves = {"random": [{**CURVES["random"][0], "extra": 7.0}], "croc": CURVES["croc"]}
    table = report.markdown_table(curves, columns=(*COLUMNS, extra)).splitlines()
    assert table[0].endswith("| extra mIoU |") and table[2].endswith("| 7.00 +- 0.00 |")
    assert table[3].endswith("| - |")
    assert figure.panels(curves, columns=(extra,))[0]["lines"][0]["mean"] == [7.0, 7.0]
    assert COLUMNS == tuple(c for e in EVALUATIONS for c in e.columns)
