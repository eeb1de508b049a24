"""The base command lines of the cases (vit_pico/8, tiny sizes) and the edits that make them bad."""

# Base command lines (vit_pico/8, tiny sizes). {ckpt} etc. are fixture placeholders; {out} the case's output dir.
A = ["--arch", "vit_pico", "--patch_size", "8", "--pretrained_weights", "{ckpt}"]
LIN = [*A, "--input_size", "32", "--epochs", "1", "--batch_size", "2", "--num_workers", "0", "--output_dir", "{out}"]
LIN_VOC = [*LIN, "--dataset", "voc", "--data_path", "{voc}"]
LIN_COCO = [*LIN, "--dataset", "coco_things", "--data_path", "{coco}"]
LIN_SYN = [*LIN, "--dataset", "synthetic", "--synthetic_train_images", "4", "--synthetic_val_images", "2"]
KM = [*A, "--input_size", "32", "--n_last_blocks", "1", "--pca_dim", "4", "--n_clusters", "0", "--n_seeds", "1",
      "--n_restarts", "1", "--n_iter", "5", "--mask_size", "16", "--batch_size", "2", "--num_workers", "0",
      "--output_dir", "{out}"]
KM_VOC = [*KM, "--dataset", "voc", "--data_path", "{voc}"]
KM_COCO = [*KM, "--dataset", "coco_stuff", "--data_path", "{coco}"]
KM_SYN = [*KM, "--dataset", "synthetic", "--synthetic_val_images", "3"]
VID = [*A, "--data_path", "{davis}", "--short_side", "64", "--output_dir", "{out}"]
PRB = [*A, "--input_size", "32", "--n_seeds", "1", "--max_iter", "5", "--n_clusters", "0", "--pca_dim", "4",
       "--weight_decays", "0.1", "0.01", "--output_dir", "{out}"]
PRB_SYN = [*PRB, "--dataset", "synthetic", "--pool_images", "8", "--train_images", "4", "--val_images", "4"]
PRB_VOC = [*PRB, "--dataset", "voc", "--data_path", "{voc}", "--pool_images", "0", "--train_images", "3",
           "--val_images", "0"]
CLU = [*A, "--global_crops_size", "32", "--synthetic_size", "48", "--output", "{out}/clusters.png"]
PLOT = ["{log}", "--output", "{out}/curves.png"]
BASE = {"linear": LIN_VOC, "kmeans": KM_VOC, "video": VID, "probe": PRB_SYN, "clusters": CLU}
CLI_TOOLS = ("linear", "kmeans", "video", "probe", "clusters")


def replace_flag(argv: list, flag: str, *values: str) -> list:
    """``argv`` with ``flag``'s value(s) replaced (appended when absent)."""
    argv = list(argv)
    if flag in argv:
        i = argv.index(flag)
        j = i + 1
        while j < len(argv) and not argv[j].startswith("--"):
            j += 1
        return argv[:i] + [flag, *values] + argv[j:]
    return argv + [flag, *values]


def with_flags(argv: list, **flags) -> list:
    for name, value in flags.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        argv = replace_flag(argv, f"--{name}", *[str(v) for v in values])
    return argv
