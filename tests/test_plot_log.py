"""eval/plot_log.py on a fabricated run folder: the drawn values, the uniform levels, one-line errors."""

import json
import math

import numpy as np
import pytest

from croc_utils.cli import run_cli
from eval.plot_log import draw_curves, get_args_parser, main, read_log


def fabricate(folder, n=4, with_args=True):
    """log.txt of ``n`` epochs with distinct known values; epoch 3 flagged as cluster-head collapse."""
    lines = []
    for e in range(n):
        lines.append({"train_loss": 9.0 - e, "train_d_loss": 5.0 - e / 2, "train_s_loss": 4.0 - e / 2,
                      "train_ent": 4.0 + 0.1 * e, "train_ent_batch": 5.0 + 0.1 * e, "train_kl": 0.8 / (e + 1),
                      "train_ent_c": 3.0 + 0.3 * e, "train_ent_batch_c": 3.5 + 0.1 * e,
                      "train_kl_c": 0.5 / (e + 1), "train_mean_k": 2.5 + 0.25 * e, "train_lr": 1e-3 * (e + 1),
                      "train_wd": 0.04 + 0.01 * e, "train_img_per_s": 30.0 + e, "train_collapse": 0,
                      "train_collapse_c": int(e == 3), "train_skipped_images": 0, "epoch": e})
    (folder / "log.txt").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if with_args:
        (folder / "args.json").write_text(json.dumps({"out_dim": 256, "out_dim_c": 64, "arch": "vit_tiny"}))
    return lines


def lines_of(ax):
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_panels_hold_the_logged_values_and_the_uniform_levels(tmp_path):
    logged = fabricate(tmp_path)
    fig = draw_curves(read_log(str(tmp_path / "log.txt")), {"out_dim": 256, "out_dim_c": 64})
    loss, ent, ent_c, kl, mean_k, lr, wd, speed = fig.axes
    assert lines_of(loss)["cluster"] == ([0, 1, 2, 3], [4.0, 3.5, 3.0, 2.5])
    assert lines_of(kl)["CLS"][1] == pytest.approx([0.8, 0.4, 0.8 / 3, 0.2])
    assert lines_of(ent)["per sample"][1] == pytest.approx([4.0, 4.1, 4.2, 4.3])
    assert lines_of(ent)["of the batch mean"][1] == pytest.approx([5.0, 5.1, 5.2, 5.3])
    assert lines_of(ent_c)["of the batch mean"][1] == pytest.approx([3.5, 3.6, 3.7, 3.8])
    assert np.allclose(lines_of(ent)["ln(256) = 5.55 (uniform)"][1], math.log(256))
    assert np.allclose(lines_of(ent_c)["ln(64) = 4.16 (uniform)"][1], math.log(64))
    # the 2% band on both entropy panels, and the flagged epoch shaded on its head only
    assert len(ent_c.patches) == 2 and len(ent.patches) == 1
    assert "collapse flagged" in lines_of(ent_c) and "collapse flagged" not in lines_of(ent)
    assert np.allclose(lines_of(kl)["collapse watch: KL < 0.01"][1], 0.01)
    assert lines_of(mean_k)["mean k"][1] == [2.5, 2.75, 3.0, 3.25]
    assert lines_of(lr)["lr"][1] == pytest.approx([1e-3, 2e-3, 3e-3, 4e-3])
    assert lines_of(wd)["wd"][1] == pytest.approx([0.04, 0.05, 0.06, 0.07])
    assert lines_of(speed)["img/s"][1] == [30.0, 31.0, 32.0, 33.0]
    assert [r["epoch"] for r in logged] == [0, 1, 2, 3]


def test_cli_writes_curves_png(tmp_path, capsys):
    fabricate(tmp_path)
    out = main(get_args_parser().parse_args([str(tmp_path)]))
    assert out == str(tmp_path / "curves.png")
    data = (tmp_path / "curves.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert "wrote" in capsys.readouterr().out


def test_rerun_epochs_keep_the_last_line_and_old_logs_still_draw(tmp_path):
    (tmp_path / "log.txt").write_text('{"train_loss": 3, "epoch": 1}\n\n{"train_loss": 2, "epoch": 0}\n'
                                      '{"train_loss": 1, "epoch": 1}\n')
    records = read_log(str(tmp_path / "log.txt"))
    assert [(r["epoch"], r["train_loss"]) for r in records] == [(0, 2), (1, 1)]
    fig = draw_curves(records, {})  # no args.json, no entropy keys: empty panels say so
    assert lines_of(fig.axes[0])["total"][1] == [2, 1]
    assert any(t.get_text() == "not in this log" for t in fig.axes[1].texts)


def test_a_torn_last_line_is_skipped_with_one_warning_and_the_complete_epochs_drawn(tmp_path, capsys):
    """What a full disk or a kill during a log write leaves: the complete epochs are still drawn."""
    logged = fabricate(tmp_path, n=3)
    with open(tmp_path / "log.txt", "a") as f:
        f.write('{"train_loss": 6.0, "train_d_loss": 3')  # epoch 3, cut mid-line
    capsys.readouterr()
    main(get_args_parser().parse_args([str(tmp_path)]))
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith(f"warning: {tmp_path / 'log.txt'}: skipped line 4"), err
    assert "wrote" in out and "(3 epochs" in out
    fig = draw_curves(read_log(str(tmp_path / "log.txt")), {})
    assert lines_of(fig.axes[0])["total"] == ([0, 1, 2], [r["train_loss"] for r in logged])


@pytest.mark.parametrize("content, message", [
    (None, "log.txt: no such file"),
    ("", "log.txt: no epoch line yet"),
    ('[1, 2]\n{"train_loss": 1, "ep', "log.txt: no readable epoch line (2 lines (1, 2) not a JSON epoch record)"),
])
def test_missing_or_garbled_log_is_one_line(tmp_path, capsys, content, message):
    if content is not None:
        (tmp_path / "log.txt").write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, get_args_parser(), [str(tmp_path)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("plot_log: error:") and message in err, err
    assert not (tmp_path / "curves.png").exists()


def one_line_error(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, get_args_parser(), argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1 and err.startswith("plot_log: error:"), err
    return err


def test_output_folder_or_bare_name_gets_a_real_file_name(tmp_path, capsys):
    fabricate(tmp_path)
    figs = tmp_path / "figs"
    figs.mkdir()
    for given, written in ((f"{figs}/", figs / "curves.png"), (str(figs), figs / "curves.png"),
                           (str(tmp_path / "figure"), tmp_path / "figure.png")):
        written.unlink(missing_ok=True)
        assert main(get_args_parser().parse_args([str(tmp_path), "--output", given])) == str(written)
        assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {written} " in capsys.readouterr().out
    assert not (figs / ".png").exists()
    err = one_line_error(capsys, [str(tmp_path), "--output", str(tmp_path / "figure.xyz")])
    assert "--output" in err and ".xyz is not an image format" in err


def test_the_figure_never_goes_over_the_log_or_its_settings(tmp_path, capsys):
    fabricate(tmp_path)
    log = (tmp_path / "log.txt").read_bytes()
    for target in ("log.txt", "args.json"):
        err = one_line_error(capsys, [str(tmp_path), "--output", str(tmp_path / target)])
        assert "--output" in err
    assert (tmp_path / "log.txt").read_bytes() == log


def test_args_json_that_holds_no_settings_object_is_ignored(tmp_path, capsys):
    fabricate(tmp_path, with_args=False)
    (tmp_path / "args.json").write_text("[1, 2]")
    main(get_args_parser().parse_args([str(tmp_path)]))
    assert "no out_dim in args.json" in capsys.readouterr().out
