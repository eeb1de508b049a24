"""What a case is (the input tried and what must come of it) and what running it gave."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

CAUSES = {
    "device": "--device naming an unavailable or unknown device",
    "unreadable_image": "an unreadable image or mask in a dataset",
    "output_path": "an unusable --output_dir / --output",
    "davis_sizes": "DAVIS annotations or frames of mismatched sizes",
    "mended_masks": "masks mended (resized, transposed, unknown ids): warned and counted",
    "output_name": "figure --output without / with an unknown extension, or a directory",
    "hub_offline": "hub download without network, unknown names, damaged cache",
    "image_modes": "16-bit and other image modes read with their meaning",
    "hub_kwargs": "hub entries with conflicting kwargs or another grid",
    "davis_content": "DAVIS lists and masks with nothing to score (empty list, 0/255 masks)",
    "partial_checkpoint": "checkpoints that fill only part of the backbone",
    "messages": "messages naming flags the tool lacks or internals",
    "numeric_flags": "numeric flags out of range",
    "overwrite_inputs": "outputs aimed at the inputs",
    "minor": "COCO category files, args.json, DAVIS frame names, logs",
    "flag_parsing": "unknown flags, malformed values, bad choices",
    "checkpoint": "unusable checkpoint files and mismatched --arch / --patch_size / --checkpoint_key",
    "data_tree": "missing or misplaced dataset folders and files",
    "valid": "valid inputs (controls: must give a correct result)",
}

TOOLS = {"linear": "eval.linear_segmentation", "kmeans": "eval.kmeans_segmentation",
         "video": "eval.video_segmentation", "probe": "eval.dense_probe", "clusters": "eval.visualize_clusters",
         "plot": "eval.plot_log", "hub": "hub"}


@dataclass
class Case:
    id: str
    cause: str
    tool: str  # key of TOOLS
    argv: list | str  # CLI arguments (placeholders: fixture names, {out}, {case}), or hub code
    expect: tuple = ("error",)  # acceptable outcomes: "ok" and / or "error"
    names: tuple = ()  # an error must name one of these (formatted like argv)
    setup: Callable | None = None
    check: Callable | None = None  # (Run) -> None when a successful result is right, else the reason
    ref: str | None = None  # id of a case whose run the check compares with
    env: dict = field(default_factory=dict)
    out: str = ""  # where the results go when not {out} (formatted like argv)


@dataclass
class Run:
    case: Case
    command: list
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    case_dir: Path | None = None
    changed_inputs: list = field(default_factory=list)
    outcome: str = ""
    detail: str = ""
    runs: dict | None = None  # id -> Run, for checks that compare with a reference case

    @property
    def out(self) -> Path:
        return Path(self.case.out) if self.case.out else self.case_dir / "out"

    def ref(self) -> "Run":
        return self.runs[self.case.ref]
