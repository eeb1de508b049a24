"""croc_utils/cli.py: the checks every evaluator shares (device, numeric ranges, output paths) and run_cli."""

import argparse

import pytest
import torch

from croc_utils.cli import (
    OneLineErrorParser,
    UsageError,
    bounded,
    device_flag,
    open_fraction,
    output_dir,
    output_file,
    positive_float,
    positive_int,
    run_cli,
)


def parse_error(capsys, parser, argv):
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("text", ["gpu", "cuda:x", "tpu:0"])
def test_device_flag_rejects_what_is_not_a_device(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a torch device"):
        device_flag(text)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
def test_device_flag_rejects_cuda_without_a_gpu(capsys):
    parser = OneLineErrorParser("tool")
    parser.add_argument("--device", default="cpu", type=device_flag)
    err = parse_error(capsys, parser, ["--device", "cuda"])
    assert "argument --device: cuda: no CUDA GPU" in err
    assert device_flag("cpu") == "cpu"


def test_device_flag_names_the_gpus_there_are():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    with pytest.raises(argparse.ArgumentTypeError, match="CUDA GPU"):
        device_flag(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("kind, text, ok", [(positive_int, "1", True), (positive_int, "0", False),
                                            (positive_int, "-3", False), (positive_int, "1.5", False),
                                            (positive_float, "1e-3", True), (positive_float, "0", False),
                                            (positive_float, "nan", False), (positive_float, "inf", False),
                                            (open_fraction, "0.5", True), (open_fraction, "1", False),
                                            (bounded(int, 0, 255), "255", True), (bounded(int, 0, 255), "256", False)])
def test_bounded_types(kind, text, ok):
    if ok:
        assert kind(text) == float(text)
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            kind(text)


def test_a_range_error_names_the_flag_in_one_line(capsys):
    parser = OneLineErrorParser("tool")
    parser.add_argument("--topk", default=5, type=positive_int)
    err = parse_error(capsys, parser, ["--topk", "0"])
    assert err.startswith("tool: error: argument --topk: must be a whole number >= 1, got 0")


def test_output_dir(tmp_path):
    assert output_dir(tmp_path / "a" / "b").is_dir()
    taken = tmp_path / "taken"
    taken.write_text("x")
    with pytest.raises(UsageError, match="--output_dir .*taken: exists and is not a folder"):
        output_dir(taken)
    with pytest.raises(UsageError, match="--output_dir .*taken/sub: cannot create the folder"):
        output_dir(taken / "sub")
    inputs = tmp_path / "DAVIS" / "Annotations" / "480p"
    inputs.mkdir(parents=True)
    (tmp_path / "link").symlink_to(inputs)
    for aimed in (inputs, inputs / "bike", tmp_path / "link"):
        with pytest.raises(UsageError, match="is in the input folder"):
            output_dir(aimed, protect=[inputs])
    assert output_dir(tmp_path / "DAVIS" / "out", protect=[inputs]).is_dir()


def test_output_file_names(tmp_path):
    formats = {"png", "jpg", "pdf"}
    figs = tmp_path / "figs"
    figs.mkdir()
    assert output_file(figs, default_name="curves.png", formats=formats) == figs / "curves.png"
    new = output_file(f"{tmp_path}/new/", default_name="curves.png", formats=formats)
    assert new == tmp_path / "new" / "curves.png"
    assert (tmp_path / "new").is_dir()
    assert output_file(tmp_path / "figure", default_name="c.png", formats=formats) == tmp_path / "figure.png"
    assert output_file(tmp_path / "f.PDF", default_name="c.png", formats=formats) == tmp_path / "f.PDF"
    with pytest.raises(UsageError, match=r"--output .*f\.xyz: \.xyz is not an image format"):
        output_file(tmp_path / "f.xyz", default_name="c.png", formats=formats)
    image = tmp_path / "photo.png"
    image.write_bytes(b"x")
    with pytest.raises(UsageError, match="is the --image file"):
        output_file(image, default_name="c.png", formats=formats, inputs={"--image": str(image)})


def test_run_cli_prints_bad_input_in_one_line_and_lets_bugs_through(capsys):
    parser = OneLineErrorParser("tool")

    def bad_input(args):
        raise UsageError("--flag 3: too many")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(bad_input, parser, [])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "tool: error: --flag 3: too many\n"

    def bug(args):
        raise ValueError("an internal inconsistency")

    with pytest.raises(ValueError, match="internal"):  # a bug keeps its traceback
        run_cli(bug, parser, [])


def test_usage_error_keeps_one_line_through_a_dataloader_worker():
    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            raise UsageError(f"/data/img{index}.jpg: unreadable image")

    loader = torch.utils.data.DataLoader(Broken(), num_workers=1)
    with pytest.raises(UsageError) as err:
        next(iter(loader))
    assert str(err.value) == "/data/img0.jpg: unreadable image"
