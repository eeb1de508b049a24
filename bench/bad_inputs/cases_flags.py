"""Cases: --device, numeric flags out of range, flag parsing, messages naming flags the tool lacks."""


from bench.bad_inputs.checks import CHECKS, check_kmeans, check_linear
from bench.bad_inputs.commands import (
    BASE,
    CLI_TOOLS,
    CLU,
    KM_SYN,
    KM_VOC,
    LIN_COCO,
    LIN_SYN,
    LIN_VOC,
    PLOT,
    PRB_SYN,
    PRB_VOC,
    VID,
    A,
    replace_flag,
    with_flags,
)
from bench.bad_inputs.fixtures import with_voc


def devices(add) -> None:
    """--device."""
    for tool in CLI_TOOLS:
        for dev in ("cuda", "cuda:7", "gpu", "mps"):
            add(f"device-{tool}-{dev}", "device", tool, with_flags(BASE[tool], device=dev), names=("--device",))


def messages(add) -> None:
    """Messages: flags the tool has, no internals."""
    add("msg-kmeans-synthetic-0-images", "messages", "kmeans", with_flags(KM_SYN, synthetic_val_images=0),
        names=("--synthetic_val_images",))
    add("msg-linear-synthetic-0-train", "messages", "linear", with_flags(LIN_SYN, synthetic_train_images=0),
        names=("--synthetic_train_images",))
    add("msg-linear-synthetic-0-val", "messages", "linear", with_flags(LIN_SYN, synthetic_val_images=0),
        names=("--synthetic_val_images",))
    add("msg-probe-synthetic-0-pool", "messages", "probe", with_flags(PRB_SYN, pool_images=0),
        names=("--pool_images",))
    add("msg-probe-synthetic-0-val", "messages", "probe", with_flags(PRB_SYN, val_images=0), names=("--val_images",))
    add("msg-kmeans-synthetic-tiny-size", "messages", "kmeans", with_flags(KM_SYN, input_size=8),
        ("ok", "error"), names=("--input_size",), check=check_kmeans)
    add("msg-probe-synthetic-size-8", "messages", "probe", with_flags(PRB_SYN, synthetic_size=8),
        names=("--synthetic_size",))
    add("msg-clusters-synthetic-size-8", "messages", "clusters", with_flags(CLU, synthetic_size=8),
        names=("--synthetic_size",))
    for tool, argv in (("kmeans", KM_VOC), ("linear", LIN_VOC), ("probe", PRB_VOC)):
        add(f"msg-{tool}-n-last-blocks-0", "messages", tool, with_flags(argv, n_last_blocks=0),
            names=("--n_last_blocks",))
        add(f"msg-{tool}-empty-val-list", "messages", tool, argv, names=("val.txt", "val"),
            setup=with_voc(lambda b: (b / "ImageSets/Segmentation/val.txt").write_text("")))
        add(f"msg-{tool}-empty-train-list", "messages", tool, argv, ("error", "ok"), names=("trainaug.txt", "train"),
            setup=with_voc(lambda b: (b / "ImageSets/Segmentation/trainaug.txt").write_text("")),
            check=CHECKS[tool])
    add("msg-kmeans-pca-above-features", "messages", "kmeans", with_flags(KM_VOC, pca_dim=1000), names=("--pca_dim",))
    add("msg-probe-pca-above-features", "messages", "probe", with_flags(PRB_SYN, pca_dim=1000), names=("--pca_dim",))
    add("msg-video-short-side-0", "messages", "video", with_flags(VID, short_side=0), names=("--short_side",))


def numeric_flags(add) -> None:
    """Numeric flags."""
    num = [
        ("kmeans", KM_VOC, {"n_restarts": 0}), ("kmeans", KM_VOC, {"mask_size": 0}),
        ("kmeans", KM_VOC, {"n_last_blocks": 5}), ("kmeans", KM_VOC, {"input_size": 0}),
        ("kmeans", KM_VOC, {"input_size": -32}), ("kmeans", KM_VOC, {"n_iter": 0}),
        ("kmeans", KM_VOC, {"pca_dim": 0}), ("kmeans", KM_VOC, {"n_seeds": 0}),
        ("kmeans", KM_VOC, {"batch_size": 0}), ("kmeans", KM_VOC, {"n_clusters": -1}),
        ("kmeans", KM_VOC, {"n_clusters": 100000}), ("kmeans", KM_VOC, {"num_workers": -1}),
        ("linear", LIN_VOC, {"epochs": 0}), ("linear", LIN_VOC, {"lr": -1}), ("linear", LIN_VOC, {"lr": "nan"}),
        ("linear", LIN_VOC, {"lr": 0}), ("linear", LIN_VOC, {"batch_size": 0}),
        ("linear", LIN_VOC, {"n_last_blocks": 5}),
        ("linear", LIN_VOC, {"input_size": 0}), ("linear", LIN_VOC, {"border_label": 300}),
        ("linear", LIN_VOC, {"num_workers": -1}),
        ("linear", LIN_COCO, {"coco_train_fraction": 0}), ("linear", LIN_COCO, {"coco_train_fraction": 1.5}),
        ("linear", LIN_COCO, {"coco_train_fraction": -0.5}), ("linear", LIN_COCO, {"coco_train_fraction": 0.01}),
        ("video", VID, {"topk": 0}), ("video", VID, {"topk": -1}), ("video", VID, {"topk": 100000}),
        ("video", VID, {"temperature": 0}), ("video", VID, {"temperature": -0.1}),
        ("video", VID, {"temperature": "nan"}), ("video", VID, {"n_last_frames": -1}),
        ("video", VID, {"size_mask_neighborhood": -1}), ("video", VID, {"short_side": 10}),
        ("probe", PRB_SYN, {"pca_dim": 0}), ("probe", PRB_SYN, {"weight_decays": -0.1}),
        ("probe", PRB_SYN, {"weight_decays": "nan"}), ("probe", PRB_SYN, {"weight_decays": "inf"}),
        ("probe", PRB_SYN, {"holdout_fraction": 0.9}), ("probe", PRB_SYN, {"holdout_fraction": 0}),
        ("probe", PRB_SYN, {"train_images": 100}), ("probe", PRB_SYN, {"max_iter": 0}),
        ("probe", PRB_SYN, {"n_last_blocks": 5}), ("probe", PRB_SYN, {"kmeans_restarts": 0}),
        ("probe", PRB_SYN, {"n_clusters": -1}), ("probe", PRB_SYN, {"batch_size": 0}),
        ("probe", PRB_SYN, {"input_size": 0}), ("probe", PRB_SYN, {"n_seeds": 0}),
        ("clusters", CLU, {"global_crops_size": 0}), ("clusters", CLU, {"global_crops_scale": [0, 0]}),
        ("clusters", CLU, {"global_crops_scale": [0.9, 0.5]}), ("clusters", CLU, {"global_crops_scale": [1.5, 2]}),
        ("clusters", CLU, {"head": 7}), ("clusters", CLU, {"n_tokens": 1}), ("clusters", CLU, {"synthetic_size": 0}),
    ]
    add("num-kmeans-n_clusters-0-above-vectors", "numeric_flags", "kmeans", with_flags(KM_VOC, input_size=16),
        names=("--n_clusters",), setup=with_voc(lambda b: (b / "ImageSets/Segmentation/val.txt").write_text(
            "2007_000039\n")))  # 21 classes, 4 feature vectors
    add("num-linear-cache_max_gb--1", "numeric_flags", "linear", with_flags(LIN_VOC, cache_max_gb=-1), ("ok", "error"),
        names=("--cache_max_gb",), check=check_linear)
    for tool, argv, flags in num:
        (name, value), = flags.items()
        value_s = "_".join(map(str, value)) if isinstance(value, list) else str(value)
        add(f"num-{tool}-{name}-{value_s}", "numeric_flags", tool, with_flags(argv, **flags), names=(f"--{name}",))


def flag_parsing(add) -> None:
    """Flag parsing: one line, the flag named."""
    for tool in ("linear", "kmeans", "video", "probe", "clusters", "plot"):
        argv = BASE.get(tool, PLOT)
        add(f"parse-{tool}-unknown-flag", "flag_parsing", tool, [*argv, "--n_epochs", "3"], names=("--n_epochs",))
        flag = {"plot": "--output", "video": "--topk"}.get(tool, "--seed")
        add(f"parse-{tool}-missing-value", "flag_parsing", tool, [*argv, flag], names=(flag,))
        if tool != "plot":
            add(f"parse-{tool}-bad-int", "flag_parsing", tool, replace_flag(argv, "--patch_size", "eight"),
                names=("--patch_size",))
            add(f"parse-{tool}-bad-arch", "flag_parsing", tool, replace_flag(argv, "--arch", "vit_large"),
                names=("--arch",))
    add("parse-plot-no-folder", "flag_parsing", "plot", [], names=("output_dir", "OUTPUT_DIR"))
    add("parse-video-no-data-path", "flag_parsing", "video", [*A, "--output_dir", "{out}"], names=("--data_path",))
    add("parse-linear-bad-dataset", "flag_parsing", "linear", with_flags(LIN_VOC, dataset="imagenet"),
        names=("--dataset",))
    add("parse-kmeans-bad-float", "flag_parsing", "kmeans", [*KM_VOC, "--n_clusters", "ten"], names=("--n_clusters",))
