"""main_croc.py --help in sections: the released flags by topic, then ours; parsing does not depend on the sections."""

import os
import subprocess
import sys

from test_parser import RELEASED_DEFAULTS  # the released flags and their released defaults

from croc_utils.parser import HELP_GROUPS, get_args_parser, parse_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The flags we add, with their defaults (the values that keep the released behaviour): the other half of the
# surface that sectioning --help must leave as it was. A new flag belongs here and in a section of HELP_GROUPS.
ADDED_DEFAULTS = {
    "head_hidden_dim": 2048, "head_bottleneck_dim": 256, "teacher_centering": "center", "precision": None,
    "compile": False, "global_crops_size": 224, "local_crops_size": 96, "synthetic_num_images": 1000,
    "synthetic_size": 224, "synthetic_cache": False, "synthetic_style": "default", "prefetch_factor": 2,
    "blur_p": [1.0, 0.1, 0.5], "solarize_p": [0.0, 0.2, 0.0], "jitter_p": [0.8, 0.8, 0.8],
    "grayscale_p": [0.2, 0.2, 0.2], "hue_jitter": [0.1, 0.1, 0.1], "jitter_strength": [1.0, 1.0, 1.0],
    "augment_on": "cpu", "dist_timeout": 30.0, "device": "auto", "tensorboard": False, "log_freq": 10,
}
CHOICES = {
    "arch": ["vit_pico", "vit_tiny", "vit_small", "vit_base", "deit_tiny", "deit_small"], "patch_size": [8, 16],
    "which_features": ["last", "k", "q", "v"], "teacher_centering": ["center", "sinkhorn_knopp"],
    "precision": ["fp32", "fp16", "bf16"], "optimizer": ["adamw", "sgd", "lars"],
    "dataset_type": ["imagenet1k", "coco", "coco+", "imagefolder", "synthetic"],
    "synthetic_style": ["default", "large", "texture"], "augment_on": ["cpu", "device"],
}


def sections() -> dict[str, list[str]]:
    """Title -> dests of the argument groups --help prints (the parser's own 'options' group left out)."""
    groups = get_args_parser()._action_groups
    return {g.title: [a.dest for a in g._group_actions] for g in groups if g.title not in ("options",
                                                                                            "positional arguments")}


def test_every_flag_is_in_exactly_one_section_released_ones_first():
    shown = sections()
    assert list(shown) == [title for title, _, _ in HELP_GROUPS]
    dests = [d for ds in shown.values() for d in ds]
    assert len(dests) == len(set(dests)) == len(get_args_parser()._actions)
    released = [d for title, ds in shown.items() if not title.startswith("added") for d in ds]
    added = [d for title, ds in shown.items() if title.startswith("added") for d in ds]
    assert set(released) == set(RELEASED_DEFAULTS) and set(added) == set(ADDED_DEFAULTS)
    first_added = next(i for i, (title, _, _) in enumerate(HELP_GROUPS) if title.startswith("added"))
    assert all(title.startswith("added") for title, _, _ in HELP_GROUPS[first_added:])


def test_the_parsed_surface_is_the_released_one_plus_ours():
    """Names, defaults and choices: sectioning --help changes none of them."""
    args = vars(parse_args([]))
    assert set(args) == set(RELEASED_DEFAULTS) | set(ADDED_DEFAULTS)
    for name, default in ADDED_DEFAULTS.items():
        assert args[name] == default and type(args[name]) is type(default), name
    choices = {a.dest: list(a.choices) for a in get_args_parser()._actions if a.choices is not None}
    assert choices == CHOICES
    assert parse_args(["--arch", "deit_small", "--blur_p", "0.5", "--precision", "bf16"]).arch == "vit_small"


def test_every_help_states_its_default():
    missing = [a.dest for a in get_args_parser()._actions if "Default" not in (a.help or "")]
    assert not missing, missing


def test_help_prints_the_sections_in_order():
    text = subprocess.run([sys.executable, "main_croc.py", "--help"], capture_output=True, text=True, cwd=ROOT,
                          check=True).stdout
    positions = [text.index(f"\n{title}:\n") for title, _, _ in HELP_GROUPS]
    assert positions == sorted(positions), positions
    assert text.startswith("usage: python main_croc.py") and len(text.splitlines()) < 260
