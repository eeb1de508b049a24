"""Cases: unusable or partial checkpoints, category files, args.json, logs, frame names, dataset trees."""

import json
from pathlib import Path

from PIL import Image

from bench.bad_inputs.checks import (
    check_announced_file,
    check_kmeans,
    check_video,
    davis_jf,
    no_false_absence,
    same_result,
)
from bench.bad_inputs.commands import (
    BASE,
    CLI_TOOLS,
    KM_COCO,
    KM_VOC,
    LIN_COCO,
    LIN_VOC,
    PLOT,
    PRB_VOC,
    VID,
    replace_flag,
    with_flags,
)
from bench.bad_inputs.fixtures import with_copy, with_voc


def partial_checkpoints(add) -> None:
    """Partial checkpoints."""
    for tool in CLI_TOOLS:
        for key in ("partial1", "partial_half"):
            add(f"partial-{tool}-{key}", "partial_checkpoint", tool,
                replace_flag(BASE[tool], "--pretrained_weights", "{" + key + "}"), names=(Path(key).name, ".pth"))


def minor(add) -> None:
    """Minor: category files, args.json, frame names, logs."""
    def coco_json(edit):
        def setup_edit(root):
            for path in root.glob("annotations/**/*.json"):
                data = json.loads(path.read_text())
                path.write_text(json.dumps(edit(data)))
        return with_copy("coco", setup_edit)

    def drop_supercategory(data):
        for c in data["categories"]:
            c.pop("supercategory", None)
        return data

    def big_id(data):
        data["categories"].append({"supercategory": "sky", "id": 300, "name": "sky-far", "isthing": 0})
        return data

    def neg_id(data):
        data["categories"].append({"supercategory": "sky", "id": -3, "name": "sky-neg", "isthing": 0})
        return data

    def str_id(data):
        data["categories"][0]["id"] = str(data["categories"][0]["id"])
        return data

    for tool, argv in (("kmeans", KM_COCO), ("linear", replace_flag(LIN_COCO, "--dataset", "coco_stuff"))):
        add(f"minor-{tool}-coco-no-supercategory", "minor", tool, argv, names=(".json",),
            setup=coco_json(drop_supercategory))
        add(f"minor-{tool}-coco-id-above-255", "minor", tool, argv, names=(".json", "300"), setup=coco_json(big_id))
        add(f"minor-{tool}-coco-negative-id", "minor", tool, argv, names=(".json", "-3"), setup=coco_json(neg_id))
        add(f"minor-{tool}-coco-string-id", "minor", tool, argv, names=(".json",), setup=coco_json(str_id))
        add(f"minor-{tool}-coco-json-list", "minor", tool, argv, names=(".json",),
            setup=coco_json(lambda d: [1, 2, 3]))
        add(f"minor-{tool}-coco-json-broken", "minor", tool, argv, names=(".json",),
            setup=with_copy("coco", lambda r: [p.write_text("{") for p in r.glob("annotations/**/*.json")]))
    add("minor-plot-args-list", "minor", "plot", PLOT, ("ok", "error"), names=("args.json",),
        setup=with_copy("log", lambda r: (r / "args.json").write_text("[1, 2]")), check=check_announced_file)
    add("minor-plot-args-string-dim", "minor", "plot", PLOT, ("ok", "error"), names=("args.json",),
        setup=with_copy("log", lambda r: (r / "args.json").write_text('{"out_dim": "65536"}')), check=no_false_absence)
    add("minor-plot-args-broken", "minor", "plot", PLOT, names=("args.json",),
        setup=with_copy("log", lambda r: (r / "args.json").write_text("{")))
    add("minor-plot-log-nan", "minor", "plot", PLOT, ("ok",), check=check_announced_file,
        setup=with_copy("log", lambda r: (r / "log.txt").write_text('{"epoch": 0, "train_loss": NaN}\n'
                                                            '{"epoch": 1, "train_loss": 1.0}\n')))
    add("minor-plot-log-list-lines", "minor", "plot", PLOT, names=("log.txt",),
        setup=with_copy("log", lambda r: (r / "log.txt").write_text("[1, 2]\n[3]\n")))
    add("minor-plot-log-empty", "minor", "plot", PLOT, names=("log.txt",),
        setup=with_copy("log", lambda r: (r / "log.txt").write_text("")))
    add("minor-plot-log-missing", "minor", "plot", PLOT, names=("log.txt",),
        setup=with_copy("log", lambda r: (r / "log.txt").unlink()))
    add("minor-plot-not-a-dir", "minor", "plot", ["{ckpt}"], names=("checkpoint.pth",))
    add("minor-plot-log-epoch-string", "minor", "plot", PLOT, ("ok", "error"), names=("log.txt",),
        setup=with_copy("log", lambda r: (r / "log.txt").write_text('{"epoch": "0", "train_loss": 1.0}\n')),
        check=check_announced_file)

    def unpad(root):
        for folder in (root / "JPEGImages/480p/walk", root / "Annotations/480p/walk"):
            for path in folder.iterdir():
                path.rename(path.with_name(f"{int(path.stem)}{path.suffix}"))

    add("minor-davis-padded-names", "minor", "video", replace_flag(VID, "--data_path", "{davis_long}"), ("ok",),
        check=check_video)
    add("minor-davis-unpadded-names", "minor", "video", replace_flag(VID, "--data_path", "{davis_long}"), ("ok",),
        setup=with_copy("davis_long", unpad), ref="minor-davis-padded-names",
        check=same_result("davis_results.json", davis_jf, check_video))


def checkpoints(add) -> None:
    """Checkpoints (each tool): unusable files, mismatched flags."""
    for tool in CLI_TOOLS:
        base = BASE[tool]
        for key, names in (("text", ("notes.txt",)), ("empty", ("empty.pth",)), ("truncated", ("truncated.pth",)),
                           ("tiny", ("vit_tiny8.pth",))):
            add(f"ckpt-{tool}-{key}", "checkpoint", tool, replace_flag(base, "--pretrained_weights", "{" + key + "}"),
                names=names)
        add(f"ckpt-{tool}-missing", "checkpoint", tool, replace_flag(base, "--pretrained_weights", "{out}/none.pth"),
            names=("none.pth",))
        add(f"ckpt-{tool}-directory", "checkpoint", tool, replace_flag(base, "--pretrained_weights", "{case}"),
            names=("{case}",))
        add(f"ckpt-{tool}-bad-key", "checkpoint", tool, [*base, "--checkpoint_key", "momentum"],
            names=("momentum", "--checkpoint_key"))
        add(f"ckpt-{tool}-patch16", "checkpoint", tool, replace_flag(base, "--patch_size", "16"),
            names=("checkpoint.pth",))
        add(f"ckpt-{tool}-arch-tiny", "checkpoint", tool, replace_flag(base, "--arch", "vit_tiny"),
            names=("checkpoint.pth",))
    for tool in CLI_TOOLS:
        add(f"ckpt-{tool}-nan-weights", "checkpoint", tool, replace_flag(BASE[tool], "--pretrained_weights", "{nan}"),
            names=("nan_weights.pth",))
    add("ckpt-video-grid64", "checkpoint", "video", replace_flag(VID, "--pretrained_weights", "{grid64}"), ("ok",),
        check=check_video)
    add("ckpt-kmeans-bare", "checkpoint", "kmeans", replace_flag(KM_VOC, "--pretrained_weights", "{bare}"), ("ok",),
        check=check_kmeans)


def data_trees(add) -> None:
    """Data trees."""
    for tool, argv in (("linear", LIN_VOC), ("kmeans", KM_VOC), ("probe", PRB_VOC)):
        add(f"tree-{tool}-missing-root", "data_tree", tool, with_flags(argv, data_path="{case}/nowhere"),
            names=("nowhere",))
        add(f"tree-{tool}-root-is-file", "data_tree", tool, with_flags(argv, data_path="{ckpt}"),
            names=("checkpoint.pth",))
        add(f"tree-{tool}-no-data-path", "data_tree", tool, with_flags(argv, data_path=""), names=("--data_path",))
        add(f"tree-{tool}-missing-mask", "data_tree", tool, argv, names=("2007_000039",),
            setup=with_voc(lambda b: (b / "SegmentationClass/2007_000039.png").unlink()))
        add(f"tree-{tool}-wrong-dataset", "data_tree", tool, with_flags(argv, dataset="coco_things"),
            names=("COCO", "coco"))
        add(f"tree-{tool}-rgb-masks", "data_tree", tool, argv, names=("2007_000039",),
            setup=with_voc(lambda b: Image.open(b / "SegmentationClass/2007_000039.png").convert("RGB").save(
                b / "SegmentationClass/2007_000039.png")))
    add("tree-video-missing-root", "data_tree", "video", with_flags(VID, data_path="{case}/nowhere"),
        names=("nowhere",))
    add("tree-video-voc-root", "data_tree", "video", with_flags(VID, data_path="{voc}"), names=("ImageSets",))
    add("tree-video-missing-first-annotation", "data_tree", "video", VID, names=("00000.png",),
        setup=with_copy("davis", lambda r: (r / "Annotations/480p/bike/00000.png").unlink()))
    add("tree-video-missing-later-annotation", "data_tree", "video", VID, ("ok",), check=check_video,
        setup=with_copy("davis", lambda r: (r / "Annotations/480p/bike/00002.png").unlink()))
    add("tree-coco-missing-json", "data_tree", "kmeans", KM_COCO, names=("category file", ".json"),
        setup=with_copy("coco", lambda r: [p.unlink() for p in r.glob("annotations/**/stuff_val2017.json")]))
    add("tree-coco-image-without-mask", "data_tree", "kmeans", KM_COCO, names=("000000000002",),
        setup=with_copy("coco", lambda r: (r / "annotations/annotations/stuff_annotations/stuff_val2017_pixelmaps/"
                                       "000000000002.png").unlink()))
