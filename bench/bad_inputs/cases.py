"""The table of cases: the valid controls, then every group of causes, in the order they are reported."""

from bench.bad_inputs.case import Case
from bench.bad_inputs.cases_davis import davis_content, davis_sizes
from bench.bad_inputs.cases_files import checkpoints, data_trees, minor, partial_checkpoints
from bench.bad_inputs.cases_flags import devices, flag_parsing, messages, numeric_flags
from bench.bad_inputs.cases_hub import hub_kwargs, hub_offline
from bench.bad_inputs.cases_images import image_modes, mended_masks, unreadable_images
from bench.bad_inputs.cases_outputs import figure_names, output_paths, overwrite_inputs
from bench.bad_inputs.checks import check_announced_file, check_kmeans, check_linear, check_probe, check_video
from bench.bad_inputs.commands import (
    CLU,
    KM_COCO,
    KM_SYN,
    KM_VOC,
    LIN_COCO,
    LIN_SYN,
    LIN_VOC,
    PLOT,
    PRB_SYN,
    PRB_VOC,
    VID,
    replace_flag,
)
from bench.bad_inputs.fixtures import with_copy


def valid(add) -> None:
    """Valid inputs: every tool must give a correct result."""
    add("valid-linear-voc", "valid", "linear", LIN_VOC, ("ok",), check=check_linear)
    add("valid-linear-coco", "valid", "linear", LIN_COCO, ("ok",), check=check_linear)
    add("valid-linear-synthetic", "valid", "linear", LIN_SYN, ("ok",), check=check_linear)
    add("valid-linear-leopart", "valid", "linear", [*LIN_VOC, "--protocol", "leopart"], ("ok",), check=check_linear)
    add("valid-kmeans-voc", "valid", "kmeans", KM_VOC, ("ok",), check=check_kmeans)
    add("valid-kmeans-coco", "valid", "kmeans", KM_COCO, ("ok",), check=check_kmeans)
    add("valid-kmeans-synthetic", "valid", "kmeans", KM_SYN, ("ok",), check=check_kmeans)
    add("valid-video", "valid", "video", VID, ("ok",), check=check_video)
    add("valid-probe-synthetic", "valid", "probe", PRB_SYN, ("ok",), check=check_probe)
    add("valid-probe-voc", "valid", "probe", PRB_VOC, ("ok",), check=check_probe)
    add("valid-clusters-synthetic", "valid", "clusters", CLU, ("ok",), check=check_announced_file)
    add("valid-clusters-image", "valid", "clusters", [*CLU, "--image", "{image}"], ("ok",), check=check_announced_file)
    add("valid-plot", "valid", "plot", PLOT, ("ok",), check=check_announced_file)
    add("valid-plot-default-output", "valid", "plot", ["{log}"], ("ok",), check=check_announced_file,
        setup=with_copy("log"))
    add("valid-hub-croc_vit", "valid", "hub", "m = hubconf.croc_vit(weights='{ckpt}'); assert m.patch_size == 8",
        ("ok",))
    add("valid-hub-bare-with-arch", "valid", "hub",
        "hubconf.croc_vit(weights='{bare}', arch='vit_pico', patch_size=8)", ("ok",))
    add("valid-hub-vits16-file", "valid", "hub", "hubconf.croc_vits16(weights='{vits}', depth=2)", ("ok",))
    add("valid-hub-torch-hub-load", "valid", "hub",
        "torch.hub.load(ROOT, 'croc_vit', source='local', weights='{ckpt}')", ("ok",))
    add("valid-extra-keys-linear", "valid", "linear", replace_flag(LIN_VOC, "--pretrained_weights", "{extra_keys}"),
        ("ok",), check=check_linear)
    add("valid-video-student", "valid", "video", [*VID, "--checkpoint_key", "student"], ("ok",), check=check_video)


SECTIONS = (valid, devices, unreadable_images, output_paths, davis_sizes, mended_masks, figure_names, hub_offline,
            image_modes, hub_kwargs, davis_content, partial_checkpoints, messages, numeric_flags, overwrite_inputs,
            minor, checkpoints, flag_parsing, data_trees)


def cases() -> list[Case]:
    """Every case, in the order of SECTIONS."""
    out: list[Case] = []

    def add(*args, **kwargs):
        out.append(Case(*args, **kwargs))

    for section in SECTIONS:
        section(add)
    return out
