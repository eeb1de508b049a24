"""Cases: unreadable images and masks, mended masks, image modes (16-bit grey and others)."""

from pathlib import Path

import numpy as np
from PIL import Image

from bench.bad_inputs.checks import (
    CHECKS,
    check_announced_file,
    check_kmeans,
    check_linear,
    check_probe,
    check_video,
    davis_jf,
    json_has,
    kmeans_mious,
    same_picture,
    same_result,
    warns,
)
from bench.bad_inputs.commands import CLU, KM_COCO, KM_VOC, LIN_COCO, LIN_VOC, PRB_VOC, VID, replace_flag, with_flags
from bench.bad_inputs.fixtures import make_file, save_grey, truncate, with_copy, with_voc


def unreadable_images(add) -> None:
    """Unreadable images and masks."""
    jpeg = "JPEGImages"

    def bad_voc_image(name, how):
        def edit(base):
            path = base / jpeg / f"{name}.jpg"
            if how == "truncated":
                truncate(path, 0.3)
            elif how == "empty":
                path.write_bytes(b"")
            else:
                path.write_text("<html>404 Not Found</html>")
        return edit

    for tool, argv in (("linear", LIN_VOC), ("kmeans", KM_VOC), ("probe", PRB_VOC)):
        for name, how in (("2007_000039", "truncated"), ("2007_000063", "empty"), ("2007_000063", "html")):
            add(f"unreadable-{tool}-voc-{how}", "unreadable_image", tool, argv, names=(name,),
                setup=with_voc(bad_voc_image(name, how)))
        add(f"unreadable-{tool}-voc-mask", "unreadable_image", tool, argv, names=("2007_000039",),
            setup=with_voc(lambda b: truncate(b / "SegmentationClass" / "2007_000039.png", 0.4)))
    for tool, argv in (("linear", LIN_COCO), ("kmeans", KM_COCO)):
        add(f"unreadable-{tool}-coco-image", "unreadable_image", tool, argv, names=("000000000001",),
            setup=with_copy("coco", lambda r: truncate(r / "coco/images/val2017/000000000001.jpg", 0.3)))
        add(f"unreadable-{tool}-coco-mask", "unreadable_image", tool, argv, names=("000000000001",),
            setup=with_copy("coco", lambda r: (r / "annotations/annotations/stuff_annotations/stuff_val2017_pixelmaps/"
                                           "000000000001.png").write_bytes(b"")
                            or (r / "annotations/panoptic_annotations/semantic_segmentation_val2017/"
                                    "000000000001.png").write_bytes(b"")))
    frames = "JPEGImages/480p/bike"
    add("unreadable-video-frame", "unreadable_image", "video", VID, names=("00002",),
        setup=with_copy("davis", lambda r: truncate(r / frames / "00002.jpg", 0.3)))
    add("unreadable-video-first-frame", "unreadable_image", "video", VID, names=("00000",),
        setup=with_copy("davis", lambda r: (r / frames / "00000.jpg").write_bytes(b"")))
    add("unreadable-video-annotation", "unreadable_image", "video", VID, names=("00002",),
        setup=with_copy("davis", lambda r: truncate(r / "Annotations/480p/bike/00002.png", 0.3)))
    add("unreadable-video-first-annotation", "unreadable_image", "video", VID, names=("00000",),
        setup=with_copy("davis", lambda r: (r / "Annotations/480p/bike/00000.png").write_text("not a png")))
    for tool, argv in (("linear", LIN_VOC), ("kmeans", KM_VOC)):  # the error crosses a DataLoader worker
        add(f"unreadable-{tool}-voc-workers", "unreadable_image", tool, with_flags(argv, num_workers=2),
            names=("2007_000039",), setup=with_voc(bad_voc_image("2007_000039", "truncated")))
    add("unreadable-clusters-truncated", "unreadable_image", "clusters", [*CLU, "--image", "{file}"],
        names=("bad.jpg",), setup=lambda d, fx: make_file("bad.jpg", Path(fx["image"]).read_bytes()[:300])(d, fx))
    add("unreadable-clusters-text", "unreadable_image", "clusters", [*CLU, "--image", "{file}"],
        names=("notes.png",), setup=make_file("notes.png", "not an image"))
    add("unreadable-clusters-missing", "unreadable_image", "clusters", [*CLU, "--image", "{out}/none.jpg"],
        names=("none.jpg",))


def mended_masks(add) -> None:
    """Mended masks: a warning with a count (and the count in the result file), like linear_segmentation."""
    def transpose_mask(base):
        path = base / "SegmentationClass" / "2007_000039.png"
        img = Image.open(path)
        img.transpose(Image.TRANSPOSE).save(path)

    def halve_mask(base):
        path = base / "SegmentationClass" / "2007_000063.png"
        img = Image.open(path)
        img.resize((img.width // 2, img.height // 2), Image.NEAREST).save(path)

    def unknown_coco_id(root):
        path = root / "annotations/annotations/stuff_annotations/stuff_val2017_pixelmaps/000000000000.png"
        mask = np.asarray(Image.open(path)).copy()
        mask[0, 0] = 250
        Image.fromarray(mask).save(path)

    for tool, voc_argv, coco_argv, result in (("linear", LIN_VOC, replace_flag(LIN_COCO, "--dataset", "coco_stuff"),
                                               "results.json"),
                                              ("kmeans", KM_VOC, KM_COCO, "kmeans_results.json"),
                                              ("probe", PRB_VOC, with_flags(PRB_VOC, dataset="coco_stuff",
                                                                            data_path="{coco}"),
                                               "dense_probe.json")):
        base = CHECKS[tool]
        add(f"mended-{tool}-transposed", "mended_masks", tool, voc_argv, ("ok",), setup=with_voc(transpose_mask),
            check=warns("mended|resized", json_has(result, "mask_fixes", base)))
        add(f"mended-{tool}-half-size", "mended_masks", tool, voc_argv, ("ok",), setup=with_voc(halve_mask),
            check=warns("mended|resized", json_has(result, "mask_fixes", base)))
        add(f"mended-{tool}-unknown-coco-id", "mended_masks", tool, coco_argv, ("ok",),
            setup=with_copy("coco", unknown_coco_id),
            check=warns("mended|category", json_has(result, "mask_fixes", base)))


def image_modes(add) -> None:
    """Image modes: 16-bit greyscale read as its 8-bit twin; other modes read."""
    add("modes-kmeans-grey8", "image_modes", "kmeans", with_flags(KM_VOC, data_path="{voc_grey8}"), ("ok",),
        check=check_kmeans)
    add("modes-kmeans-grey16", "image_modes", "kmeans", with_flags(KM_VOC, data_path="{voc_grey16}"), ("ok",),
        ref="modes-kmeans-grey8", check=same_result("kmeans_results.json", kmeans_mious, check_kmeans))
    add("modes-linear-grey8", "image_modes", "linear", with_flags(LIN_VOC, data_path="{voc_grey8}"), ("ok",),
        check=check_linear)
    add("modes-linear-grey16", "image_modes", "linear", with_flags(LIN_VOC, data_path="{voc_grey16}"), ("ok",),
        ref="modes-linear-grey8",
        check=same_result("results.json", lambda r: [h["train_loss"] for h in r["history"]], check_linear))
    add("modes-probe-grey8", "image_modes", "probe", with_flags(PRB_VOC, data_path="{voc_grey8}"), ("ok",),
        check=check_probe)
    add("modes-probe-grey16", "image_modes", "probe", with_flags(PRB_VOC, data_path="{voc_grey16}"), ("ok",),
        ref="modes-probe-grey8", check=same_result("dense_probe.json", lambda r: r["linear"]["mious"], check_probe))

    def davis_grey(bits):
        def edit(root):
            for path in (root / "JPEGImages/480p").glob("*/*.jpg"):
                save_grey(path, np.asarray(Image.open(path).convert("L")), bits)
        return edit

    add("modes-video-grey8", "image_modes", "video", VID, ("ok",), setup=with_copy("davis", davis_grey(8)),
        check=check_video)
    add("modes-video-grey16", "image_modes", "video", VID, ("ok",), setup=with_copy("davis", davis_grey(16)),
        ref="modes-video-grey8", check=same_result("davis_results.json", davis_jf, check_video))
    add("modes-clusters-grey8", "image_modes", "clusters", [*CLU, "--image", "{image_grey8}"], ("ok",),
        check=check_announced_file)
    add("modes-clusters-grey16", "image_modes", "clusters", [*CLU, "--image", "{image_grey16}"], ("ok",),
        ref="modes-clusters-grey8", check=same_picture)

    def coco_mode(mode):
        def edit(root):
            for path in (root / "coco/images/val2017").glob("*.jpg"):
                img = Image.open(path)
                if mode == "CMYK":
                    img.convert("CMYK").save(path, format="JPEG")
                else:
                    path.unlink()
                    img.convert(mode).save(path.with_suffix(".png"))
        return edit

    for mode in ("RGBA", "LA", "P", "CMYK", "1"):
        add(f"modes-kmeans-coco-{mode}", "image_modes", "kmeans", KM_COCO, ("ok",),
            setup=with_copy("coco", coco_mode(mode)), check=check_kmeans)
