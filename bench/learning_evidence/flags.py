"""The ``main_croc.py`` flags of a learning-evidence run as one typed, frozen dataclass that writes its own argv.

Every number a preset or the sweep sets is a typed field (``TrainFlags.lr`` is a float, not the string ``"0.002"``);
``None`` leaves ``main_croc.py``'s default. Flags without a field (``--set`` of a rarely used flag) ride in ``extra``.
"""

import types
import typing
from dataclasses import dataclass, fields, replace

from croc_utils.cli import bool_flag

Value = int | float | bool | str | tuple


@dataclass(frozen=True)
class TrainFlags:
    """The flags shared by the runs of a preset (``--output_dir``, ``--device`` and ``--alpha_s`` are given per run
    unless set here). The first group is required: the bench computes budgets and builds references from it."""

    # data, model and budget (required)
    synthetic_style: str
    synthetic_size: int
    synthetic_num_images: int
    arch: str
    patch_size: int
    global_crops_size: int
    batch_size_per_gpu: int
    epochs: int
    saveckp_freq: int
    seed: int = 0
    dataset_type: str = "synthetic"
    # everything else: None leaves main_croc.py's default
    synthetic_cache: bool | None = None
    num_workers: int | None = None
    local_crops_number: int | None = None
    local_crops_size: int | None = None
    head_hidden_dim: int | None = None
    out_dim: int | None = None
    out_dim_c: int | None = None
    norm_last_layer: bool | None = None
    drop_path_rate: float | None = None
    blur_p: tuple[float, ...] | None = None  # photometric: one value, or one per view
    solarize_p: tuple[float, ...] | None = None
    hue_jitter: tuple[float, ...] | None = None
    grayscale_p: tuple[float, ...] | None = None
    alpha_s: float | None = None  # None: the run's (CrOC 1, DINO-only 0)
    pos_alpha: float | None = None
    n_tokens: int | None = None
    n_centroids_max: int | None = None
    teacher_centering: str | None = None
    teacher_temp: float | None = None
    warmup_teacher_temp: float | None = None
    teacher_temp_c: float | None = None
    warmup_teacher_temp_c: float | None = None
    warmup_teacher_temp_epochs: int | None = None
    momentum_teacher: float | None = None
    lr: float | None = None
    min_lr: float | None = None
    warmup_epochs: int | None = None
    use_fp16: bool | None = None
    precision: str | None = None
    augment_on: str | None = None
    log_freq: int | None = None
    extra: tuple[tuple[str, Value], ...] = ()  # (flag name without dashes, value): flags without a field

    def argv(self) -> list[str]:
        """The flags as ``main_croc.py`` arguments, in field order (``extra`` last); ``None`` fields left out."""
        pairs = [(f.name, getattr(self, f.name)) for f in fields(self) if f.name != "extra"]
        return flag_words(pairs + list(self.extra))

    def images_after(self, epochs_done: int) -> int:
        """Images through the student after ``epochs_done`` epochs (full batches only, one process)."""
        return epochs_done * (self.synthetic_num_images // self.batch_size_per_gpu) * self.batch_size_per_gpu

    def with_flags(self, **values) -> "TrainFlags":
        """A copy with the named flags set: fields by ``replace``, any other flag added to ``extra``."""
        known = {f.name for f in fields(self)} - {"extra"}
        extra = dict(self.extra) | {k: v for k, v in values.items() if k not in known}
        return replace(self, **{k: v for k, v in values.items() if k in known}, extra=tuple(extra.items()))


def flag_words(pairs) -> list[str]:
    """(name, value) pairs -> argv words: ``("lr", 0.002)`` -> ``--lr 0.002``, a tuple gives several values, None
    none at all."""
    out = []
    for name, value in pairs:
        if value is not None:
            out += [f"--{name}", *(format_value(v) for v in (value if isinstance(value, tuple) else (value,)))]
    return out


def format_value(value: Value) -> str:
    """One argv word: booleans as true/false, whole floats without the fraction (``0.0`` -> ``0``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _field_type(name: str):
    """The non-None type of a field, e.g. ``float`` for ``float | None``; None for a flag without a field."""
    hints = typing.get_type_hints(TrainFlags)
    if name not in hints or name == "extra":
        return None
    hint = hints[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def parse_flag(name: str, text: str) -> Value:
    """The typed value of ``--set NAME=TEXT`` (ValueError naming the flag when TEXT does not fit its type).

    A field's type decides (``lr`` -> float, ``norm_last_layer`` -> bool, ``blur_p`` -> tuple of floats); a flag
    without a field stays a string (several words: a tuple of strings), for ``main_croc.py`` to check.
    """
    hint = _field_type(name)
    words = text.split()
    if hint is None:
        return tuple(words) if len(words) > 1 else text
    try:
        if typing.get_origin(hint) is tuple:
            return tuple(float(w) for w in words)
        if len(words) != 1:
            raise ValueError("one value expected")
        return {bool: bool_flag, int: int, float: float}.get(hint, str)(words[0])
    except Exception as e:  # ValueError, argparse.ArgumentTypeError
        raise ValueError(f"--set {name}={text!r}: not a valid {getattr(hint, '__name__', hint)} ({e})") from None
