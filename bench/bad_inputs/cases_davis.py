"""Cases: DAVIS trees of mismatched sizes, and DAVIS lists and masks with nothing to score."""


import numpy as np
from PIL import Image

from bench.bad_inputs.checks import check_video, video_not_all_nan
from bench.bad_inputs.commands import VID
from bench.bad_inputs.fixtures import with_copy


def davis_sizes(add) -> None:
    """DAVIS sizes."""
    def resize_annotations(seq, factor, which=None):
        def edit(root):
            for t, path in enumerate(sorted((root / "Annotations/480p" / seq).glob("*.png"))):
                if which is None or t in which:
                    img = Image.open(path)
                    img.resize((img.width * factor, img.height * factor), Image.NEAREST).save(path)
        return edit

    def resize_frame(seq, t, size):
        def edit(root):
            path = root / "JPEGImages/480p" / seq / f"{t:05d}.jpg"
            Image.open(path).resize(size).save(path)
        return edit

    add("davis-annotations-full-resolution", "davis_sizes", "video", VID, names=("Annotations",),
        setup=with_copy("davis", resize_annotations("bike", 2)))
    add("davis-one-annotation-bigger", "davis_sizes", "video", VID, names=("00002.png",),
        setup=with_copy("davis", resize_annotations("bike", 2, which={2})))
    add("davis-first-annotation-bigger", "davis_sizes", "video", VID, names=("00000.png",),
        setup=with_copy("davis", resize_annotations("dog", 3, which={0})))
    add("davis-frame-size-varies", "davis_sizes", "video", VID, names=("00002.jpg",),
        setup=with_copy("davis", resize_frame("bike", 2, (20, 16))))
    add("davis-first-frame-other-size", "davis_sizes", "video", VID, names=("00000",),
        setup=with_copy("davis", resize_frame("dog", 0, (30, 24))))
    add("davis-annotation-rgb", "davis_sizes", "video", VID, names=("00001.png",),
        setup=with_copy("davis", lambda r: Image.open(r / "Annotations/480p/bike/00001.png").convert("RGB").save(
            r / "Annotations/480p/bike/00001.png")))


def davis_content(add) -> None:
    """DAVIS lists and masks with nothing to score."""
    def write_list(text):
        return with_copy("davis", lambda r: (r / "ImageSets/2017/val.txt").write_text(text))

    add("davis-empty-list", "davis_content", "video", VID, names=("val.txt",), setup=write_list(""))
    add("davis-blank-list", "davis_content", "video", VID, names=("val.txt",), setup=write_list("\n  \n"))
    add("davis-listed-twice", "davis_content", "video", VID, ("ok", "error"), names=("bike",),
        setup=write_list("bike\nbike\n"), check=check_video)

    def binary_masks(root):
        for path in (root / "Annotations/480p").glob("*/*.png"):
            mask = np.asarray(Image.open(path))
            Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8), mode="L").save(path)

    add("davis-masks-0-255", "davis_content", "video", VID, ("error",), names=("Annotations",),
        setup=with_copy("davis", binary_masks), check=video_not_all_nan)
    add("davis-two-frames", "davis_content", "video", VID, ("ok", "error"), names=("dog",),
        setup=with_copy("davis", lambda r: [p.unlink() for p in sorted((r / "JPEGImages/480p/dog").glob("*.jpg"))[2:]]),
        check=video_not_all_nan)
    add("davis-missing-split", "davis_content", "video", [*VID, "--split", "test-dev"], names=("test-dev",))
    add("davis-no-frames", "davis_content", "video", VID, names=("bike",),
        setup=with_copy("davis", lambda r: [p.unlink() for p in (r / "JPEGImages/480p/bike").glob("*.jpg")]))
    add("davis-png-frames", "davis_content", "video", VID, ("ok", "error"), names=("bike", ".png"),
        setup=with_copy("davis", lambda r: [Image.open(p).save(p.with_suffix(".png")) or p.unlink()
                                    for p in (r / "JPEGImages/480p/bike").glob("*.jpg")]), check=check_video)
    add("davis-only-void-everywhere", "davis_content", "video", VID, ("error",), names=("object",),
        setup=with_copy("davis", lambda r: [Image.fromarray(np.zeros((8, 10), np.uint8), mode="L").save(p)
                                    for p in (r / "Annotations/480p").glob("*/*.png")]), check=video_not_all_nan)
