"""Cases: unusable output folders and figure names, outputs aimed at the inputs."""

import os
from pathlib import Path

from bench.bad_inputs.checks import check_announced_file, check_kmeans, check_video
from bench.bad_inputs.commands import BASE, CLU, KM_VOC, PLOT, VID, replace_flag, with_flags
from bench.bad_inputs.fixtures import make_dir, make_file, with_copy


def davis_with_link(case_dir: Path, fx: dict) -> dict:
    """Setup: a private DAVIS tree and ``<case>/link``, a symbolic link to its annotations."""
    extra = with_copy("davis")(case_dir, fx)
    os.symlink(Path(extra["davis"]) / "Annotations/480p", case_dir / "link")
    return extra


def output_paths(add) -> None:
    """Unusable output folders / files."""
    for tool in ("linear", "kmeans", "video", "probe"):
        add(f"output-{tool}-is-file", "output_path", tool, with_flags(BASE[tool], output_dir="{file}"),
            names=("--output_dir", "{file}"), setup=make_file("taken"))
        add(f"output-{tool}-under-file", "output_path", tool, with_flags(BASE[tool], output_dir="{file}/sub"),
            names=("--output_dir", "{file}"), setup=make_file("taken"))
        add(f"output-{tool}-not-writable", "output_path", tool, with_flags(BASE[tool], output_dir="/sys/croc_out"),
            names=("--output_dir", "/sys/croc_out"))
    add("output-clusters-under-file", "output_path", "clusters", with_flags(CLU, output="{file}/c.png"),
        names=("--output", "{file}"), setup=make_file("taken"))
    add("output-clusters-not-writable", "output_path", "clusters", with_flags(CLU, output="/sys/croc_out/c.png"),
        names=("--output", "/sys/croc_out"))
    add("output-plot-under-file", "output_path", "plot", ["{log}", "--output", "{file}/c.png"],
        names=("--output", "{file}"), setup=make_file("taken"))
    add("output-plot-not-writable", "output_path", "plot", ["{log}", "--output", "/sys/croc_out/c.png"],
        names=("--output", "/sys/croc_out"))


def figure_names(add) -> None:
    """Figure names."""
    for tool, argv in (("plot", PLOT), ("clusters", CLU)):
        add(f"name-{tool}-dir-slash", "output_name", tool, with_flags(argv, output="{folder}/"), ("ok", "error"),
            names=("--output",), setup=make_dir("figs"), check=check_announced_file)
        add(f"name-{tool}-existing-dir", "output_name", tool, with_flags(argv, output="{folder}"), ("ok", "error"),
            names=("--output",), setup=make_dir("figs"), check=check_announced_file)
        add(f"name-{tool}-no-extension", "output_name", tool, with_flags(argv, output="{out}/figure"),
            ("ok", "error"), names=("--output",), check=check_announced_file)
        add(f"name-{tool}-jpg", "output_name", tool, with_flags(argv, output="{out}/figure.jpg"), ("ok",),
            check=check_announced_file)
        add(f"name-{tool}-unknown-extension", "output_name", tool, with_flags(argv, output="{out}/figure.xyz"),
            names=("--output",))
        add(f"name-{tool}-upper-png", "output_name", tool, with_flags(argv, output="{out}/figure.PNG"), ("ok",),
            check=check_announced_file)


def overwrite_inputs(add) -> None:
    """Outputs aimed at the inputs."""
    add("overwrite-video-annotations", "overwrite_inputs", "video",
        [*replace_flag(VID, "--output_dir", "{davis}/Annotations/480p")], names=("--output_dir", "Annotations"),
        setup=with_copy("davis"))
    add("overwrite-video-annotations-trailing-slash", "overwrite_inputs", "video",
        replace_flag(VID, "--output_dir", "{davis}/Annotations/480p/"), names=("--output_dir", "Annotations"),
        setup=with_copy("davis"))
    add("overwrite-video-annotations-symlink", "overwrite_inputs", "video",
        replace_flag(VID, "--output_dir", "{case}/link"), names=("--output_dir", "Annotations", "link"),
        setup=davis_with_link)
    add("overwrite-video-frames", "overwrite_inputs", "video",
        replace_flag(VID, "--output_dir", "{davis}/JPEGImages/480p"),
        ("ok", "error"), names=("--output_dir", "JPEGImages"), check=check_video, out="{davis}/JPEGImages/480p",
        setup=with_copy("davis"))
    add("overwrite-video-root", "overwrite_inputs", "video", replace_flag(VID, "--output_dir", "{davis}"),
        ("ok", "error"), names=("--output_dir",), check=check_video, out="{davis}",
        setup=with_copy("davis"))
    add("overwrite-plot-log", "overwrite_inputs", "plot", ["{log}", "--output", "{log}/log.txt"],
        names=("--output", "log.txt"), setup=with_copy("log"))
    add("overwrite-plot-args", "overwrite_inputs", "plot", ["{log}", "--output", "{log}/args.json"],
        names=("--output", "args.json"), setup=with_copy("log"))
    add("overwrite-clusters-image", "overwrite_inputs", "clusters", [*CLU, "--image", "{file}", "--output", "{file}"],
        names=("--output", "--image"), setup=with_copy("image_grey8", as_key="file"))
    add("overwrite-clusters-checkpoint", "overwrite_inputs", "clusters",
        replace_flag(with_flags(CLU, output="{ckpt}"), "--pretrained_weights", "{ckpt}"),
        names=("--output", "--pretrained_weights", "checkpoint.pth"),
        setup=with_copy("ckpt"))
    add("overwrite-kmeans-into-data", "overwrite_inputs", "kmeans", with_flags(KM_VOC, output_dir="{voc}"),
        ("ok", "error"), names=("--output_dir",), check=check_kmeans, out="{voc}",
        setup=with_copy("voc"))
