"""Tests of croc_utils/synthetic.py: determinism, valid masks, shapes, the figure script."""

import numpy as np
import pytest
from PIL import Image

from croc_utils.synthetic import (
    MASK_COLOURS,
    SYNTHETIC_CLASSES,
    SyntheticScenes,
    colourize_mask,
    save_figure,
    shape_mask,
    texture,
)


def test_same_seed_same_images_and_masks():
    a, b = SyntheticScenes("train", 5, 64, seed=3), SyntheticScenes("train", 5, 64, seed=3)
    for i in range(5):
        (img_a, mask_a), (img_b, mask_b) = a[i], b[i]
        assert np.array_equal(np.array(img_a), np.array(img_b)) and np.array_equal(mask_a, mask_b)
    assert np.array_equal(a[-1][1], a[4][1])


def test_seed_split_and_index_change_the_scene():
    base = np.array(SyntheticScenes("train", 3, 64, seed=0)[1][0])
    assert not np.array_equal(base, np.array(SyntheticScenes("train", 3, 64, seed=1)[1][0]))
    assert not np.array_equal(base, np.array(SyntheticScenes("val", 3, 64, seed=0)[1][0]))
    assert not np.array_equal(base, np.array(SyntheticScenes("train", 3, 64, seed=0)[2][0]))


@pytest.mark.parametrize("size", [32, 100, 224])
def test_masks_cover_every_pixel_with_a_valid_class(size):
    scenes = SyntheticScenes("val", 12, size, seed=0)
    seen = set()
    for img, mask in (scenes[i] for i in range(len(scenes))):
        assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (size, size)
        assert mask.shape == (size, size) and mask.dtype == np.uint8
        assert mask.max() < len(SYNTHETIC_CLASSES)
        seen |= set(np.unique(mask).tolist())
        assert (mask > 0).mean() > 0.02  # every scene shows objects
    assert len(seen) >= 5  # several classes, not one


def test_every_class_occurs_and_scenes_hold_several_instances():
    scenes = SyntheticScenes("train", 40, 96, seed=0)
    masks = np.stack([scenes[i][1] for i in range(len(scenes))])
    counts = np.bincount(masks.ravel(), minlength=len(SYNTHETIC_CLASSES))
    assert (counts > 0).all()
    assert 0.4 < counts[0] / counts.sum() < 0.95  # background is common but not everything
    assert np.mean([len(np.unique(m)) - 1 for m in masks]) >= 2.5  # several object classes per image


def test_colours_do_not_label_classes():
    """The same palette is used by every class: the mean colour per class is close to the overall object mean."""
    scenes = SyntheticScenes("train", 40, 96, seed=1)
    pixels, labels = [], []
    for i in range(len(scenes)):
        img, mask = scenes[i]
        pixels.append(np.array(img).reshape(-1, 3).astype(float))
        labels.append(mask.ravel())
    pixels, labels = np.concatenate(pixels), np.concatenate(labels)
    objects = pixels[labels > 0].mean(0)
    for cls in range(1, len(SYNTHETIC_CLASSES)):
        assert np.abs(pixels[labels == cls].mean(0) - objects).max() < 40  # out of 255


def test_shape_masks_by_hand():
    p, q = np.array([0.0, 0.95, 1.1, 0.0, -0.9, 0.8]), np.array([0.0, 0.0, 0.0, 0.9, 0.0, 0.0])
    assert shape_mask(SYNTHETIC_CLASSES.index("disc"), p, q).tolist() == [True, True, False, True, True, True]
    assert shape_mask(SYNTHETIC_CLASSES.index("ring"), p, q).tolist() == [False, True, False, True, True, True]
    # Crescent: the unit disc minus a disc of radius 0.8 centred at (0.5, 0); (0, 0.9) is on a horn.
    assert shape_mask(SYNTHETIC_CLASSES.index("crescent"), p, q).tolist() == [False, False, False, True, True, False]
    assert shape_mask(SYNTHETIC_CLASSES.index("box"), p, q).tolist() == [True, False, False, False, False, True]
    triangle = shape_mask(
        SYNTHETIC_CLASSES.index("triangle"), np.array([0.0, 0.0, 0.8, 0.0]), np.array([0.0, 0.95, 0.5, -0.6])
    )
    assert triangle.tolist() == [True, True, False, False]
    cross = shape_mask(SYNTHETIC_CLASSES.index("cross"), np.array([0.0, 0.9, 0.5, 0.0]), np.array([0.9, 0.1, 0.5, 0.0]))
    assert cross.tolist() == [True, True, False, True]


def test_textures_are_two_level_patterns_in_unit_range():
    u, v = np.meshgrid(np.arange(64, dtype=np.float32) - 32, np.arange(64, dtype=np.float32) - 32)
    for kind in range(7):
        w = texture(kind, u, v, period=8.0)
        assert w.shape == (64, 64) and w.min() >= 0 and w.max() <= 1
        assert (w < 0.1).mean() > 0.1 and (w > 0.9).mean() > 0.1  # both colours of the pair show


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        SyntheticScenes("test")
    with pytest.raises(ValueError, match="synthetic_num_images"):
        SyntheticScenes("train", 0)
    with pytest.raises(IndexError):
        SyntheticScenes("train", 3)[3]


def test_figure_script_writes_image_and_mask(tmp_path):
    path = save_figure(str(tmp_path / "fig" / "sample.png"), seed=0, size=48, count=2)
    fig = np.array(Image.open(path).convert("RGB"))
    img, mask = SyntheticScenes("val", 2, 48, seed=0)[0]
    assert np.array_equal(fig[:48, :48], np.array(img))
    assert np.array_equal(fig[:48, 52:100], colourize_mask(mask))
    assert colourize_mask(np.array([[0, 7]], dtype=np.uint8)).tolist() == [
        [MASK_COLOURS[0].tolist(), MASK_COLOURS[7].tolist()]
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_cache_serves_the_scenes_drawn_on_the_fly(workers):
    cached = SyntheticScenes("train", 12, 48, seed=3, cache=True, workers=workers)
    fresh = SyntheticScenes("train", 12, 48, seed=3)
    for i in range(12):
        assert np.array_equal(np.asarray(cached[i][0]), np.asarray(fresh[i][0]))
        assert np.array_equal(cached[i][1], fresh[i][1])


def test_first_index_shifts_the_stream_and_cache_agrees():
    base = SyntheticScenes("train", 6, 48, seed=2)
    shifted = SyntheticScenes("train", 3, 48, seed=2, first_index=3)
    cached = SyntheticScenes("train", 3, 48, seed=2, first_index=3, cache=True, workers=1)
    for i in range(3):
        assert np.array_equal(np.array(shifted[i][0]), np.array(base[3 + i][0]))
        assert np.array_equal(np.array(cached[i][0]), np.array(base[3 + i][0]))
        assert np.array_equal(cached[i][1], base[3 + i][1])


def test_large_style_has_fewer_bigger_objects():
    default, large = SyntheticScenes("train", 30, 96, seed=0), SyntheticScenes("train", 30, 96, seed=0, style="large")
    def object_stats(scenes):
        masks = np.stack([scenes[i][1] for i in range(len(scenes))])
        return (masks > 0).mean(), np.mean([len(np.unique(m)) - 1 for m in masks])
    (fg_default, classes_default), (fg_large, classes_large) = object_stats(default), object_stats(large)
    assert classes_large < classes_default  # fewer instances, so fewer classes per scene
    assert fg_large / classes_large > 1.3 * fg_default / classes_default  # each class covers more of the image
    with pytest.raises(ValueError, match="synthetic_style"):
        SyntheticScenes("train", 3, 48, style="huge")


# ===== the texture style (croc_utils/texture_scenes.py) =====

def test_texture_scenes_label_every_pixel_with_a_family():
    from croc_utils.texture_scenes import TEXTURE_FAMILIES

    scenes = SyntheticScenes("train", 60, 64, seed=0, style="texture")
    assert scenes.classes == TEXTURE_FAMILIES and len(TEXTURE_FAMILIES) >= 6
    masks = np.stack([scenes[i][1] for i in range(len(scenes))])
    assert masks.max() < len(TEXTURE_FAMILIES)
    counts = np.bincount(masks.ravel(), minlength=len(TEXTURE_FAMILIES))
    assert counts.min() > 0.5 * counts.mean()  # families are drawn uniformly
    assert np.mean([len(np.unique(m)) for m in masks]) >= 2.5  # several regions per scene


def test_texture_colours_do_not_label_families():
    """Per-family mean colour and mean patch contrast differ little: neither is a shortcut to the class."""
    scenes = SyntheticScenes("train", 80, 64, seed=2, style="texture")
    images = np.stack([np.asarray(scenes[i][0], dtype=np.float32) / 255 for i in range(len(scenes))])
    masks = np.stack([scenes[i][1] for i in range(len(scenes))])
    means = np.stack([images[masks == c].mean(0) for c in range(len(scenes.classes))])  # (C, 3)
    assert np.abs(means - images.reshape(-1, 3).mean(0)).max() < 0.06


def test_texture_families_are_structurally_different():
    """The same region drawn as each family at one orientation and period: every pair of patterns differs."""
    from croc_utils.texture_scenes import TEXTURE_FAMILIES, family_pattern

    coords = np.arange(64, dtype=np.float32) + 0.5
    u, v = np.meshgrid(coords, coords, indexing="xy")
    patterns = [family_pattern(name, u, v, 6.0, np.random.default_rng(0)) for name in TEXTURE_FAMILIES]
    for i in range(len(patterns)):
        assert 0.0 <= patterns[i].min() and patterns[i].max() <= 1.0 and patterns[i].std() > 0.1
        for j in range(i):
            assert np.abs(patterns[i] - patterns[j]).mean() > 0.1, (TEXTURE_FAMILIES[i], TEXTURE_FAMILIES[j])
    with pytest.raises(ValueError, match="unknown texture family"):
        family_pattern("plaid", u, v, 6.0, np.random.default_rng(0))


def test_texture_scene_is_deterministic_and_figure_has_its_legend(tmp_path):
    a, b = (SyntheticScenes("val", 2, 48, seed=5, style="texture") for _ in range(2))
    assert np.array_equal(np.asarray(a[1][0]), np.asarray(b[1][0])) and np.array_equal(a[1][1], b[1][1])
    path = save_figure(str(tmp_path / "t.png"), size=48, count=2, style="texture")
    assert Image.open(path).size[1] == 2 * (48 + 4) + 22 * len(a.classes)


def test_the_cache_pool_does_not_fork_a_process_that_initialised_cuda(monkeypatch):
    """A forked child of a process with a CUDA context (or other threads) may crash or hang: the pool spawns then,
    and draws the same scenes."""
    import torch

    from croc_utils import synthetic

    methods, executor = [], synthetic.ProcessPoolExecutor

    def recording_executor(*args, mp_context=None, **kwargs):
        methods.append(mp_context.get_start_method())
        return executor(*args, mp_context=mp_context, **kwargs)

    monkeypatch.setattr(synthetic, "ProcessPoolExecutor", recording_executor)
    expected = synthetic.render_all("train", 4, 32, seed=5, workers=1)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    images, masks = synthetic.render_all("train", 4, 32, seed=5, workers=2)
    assert methods == ["spawn"]
    assert np.array_equal(images, expected[0]) and np.array_equal(masks, expected[1])
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(synthetic.threading, "active_count", lambda: 1)
    synthetic.render_all("train", 4, 32, seed=5, workers=2)
    assert methods == ["spawn", "fork"]  # no CUDA, no other thread: the cheap fork
