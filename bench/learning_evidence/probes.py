"""What is measured on each backbone (``EVALUATIONS``, the one list to extend), and the probing of the runs'
checkpoints, of random init and of the references (floors, supervised ceiling) on the same scenes.

A new measurement is one more ``Evaluation``: a function of (backbone, probe scenes, preset) returning entries for
the evaluated point, optionally one of fixed features (the floors), and the table / figure columns that read them.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from croc_utils.synthetic import SyntheticScenes
from eval.nn_retrieval import RetrievalConfig, evaluate_on_features
from eval.probe import cache_features, evaluate_backbone, evaluate_features
from eval.probe_baselines import FLOORS, floor_features, train_supervised
from models.pretrained import load_backbone

from .presets import Preset
from .runner import checkpoints, epochs_done


@dataclass(frozen=True)
class Column:
    """One column of the table and one panel of the figure: ``read(point)`` -> (mean, std) in mIoU points, NaN when
    the point was not measured this way."""

    key: str
    header: str  # the table's
    title: str  # the figure panel's
    read: Callable[[dict], tuple[float, float]]


@dataclass(frozen=True)
class Evaluation:
    """One measurement of a backbone. ``on_backbone(model, data, preset)`` and ``on_features(pool, val, data,
    preset)`` (fixed features of the floors; None: floors are not measured this way) return point entries."""

    name: str
    on_backbone: Callable
    on_features: Callable | None
    columns: tuple[Column, ...]


NAN = (math.nan, math.nan)


def _summary(result: dict | None) -> tuple[float, float]:
    return (result["miou_mean"], result["miou_std"]) if result else NAN


def _kmeans(point: dict, which: int) -> tuple[float, float]:
    """K-means of the smallest (``which`` 0: K = #classes) or largest (-1) K measured."""
    ks = sorted(point.get("kmeans", {}), key=int)
    return _summary(point["kmeans"][ks[which]]) if ks else NAN


DENSE_PROBE = Evaluation(
    name="dense_probe",
    on_backbone=lambda model, data, preset: evaluate_backbone(model, data, preset.probe, preset.device),
    on_features=lambda pool, val, data, preset: evaluate_features(pool, val, data, preset.probe),
    columns=(Column("linear", "linear probe mIoU", "linear probe", lambda p: _summary(p.get("linear"))),
             Column("kmeans_classes", "K-means K=#classes", "K-means K=#classes", lambda p: _kmeans(p, 0)),
             Column("kmeans_over", "K-means K=100", "K-means K=100", lambda p: _kmeans(p, -1))))



def _retrieval(pool: torch.Tensor, val: torch.Tensor, data, preset: Preset) -> dict:
    """Dense nearest-neighbour retrieval (eval.nn_retrieval: k 30, temperature .02) with every patch of the probe's
    whole pool as the memory, unaugmented; deterministic, so one value (std 0). mIoU in points. Nothing when the
    preset turns it off."""
    if not preset.retrieval:
        return {}
    cfg = RetrievalConfig(batch_size=preset.probe.batch_size)
    out = evaluate_on_features(pool, data.pool_masks, val, data.val_masks, data.class_names, cfg, preset.device)
    return {"retrieval": {"miou_mean": 100 * out["miou"], "miou_std": 0.0,
                          "miou_hungarian": 100 * out["miou_hungarian"], "memory_patches": out["memory_patches"]}}


NN_RETRIEVAL = Evaluation(
    name="nn_retrieval",
    on_backbone=lambda model, data, preset: _retrieval(
        *(cache_features(model, images, batch_size=preset.probe.batch_size, device=preset.device)
          for images in (data.pool_images, data.val_images)), data, preset) if preset.retrieval else {},
    on_features=_retrieval,
    columns=(Column("retrieval", "NN retrieval mIoU", "NN retrieval (k=30)", lambda p: _summary(p.get("retrieval"))),))

EVALUATIONS: tuple[Evaluation, ...] = (DENSE_PROBE, NN_RETRIEVAL)
COLUMNS: tuple[Column, ...] = tuple(c for e in EVALUATIONS for c in e.columns)


def measure(model: torch.nn.Module, data, preset: Preset) -> dict:
    """Every evaluation of one backbone, merged into one point."""
    point = {}
    for evaluation in EVALUATIONS:
        point.update(evaluation.on_backbone(model, data, preset))
    return point


def measure_features(pool: torch.Tensor, val: torch.Tensor, data, preset: Preset) -> dict:
    point = {}
    for evaluation in EVALUATIONS:
        if evaluation.on_features is not None:
            point.update(evaluation.on_features(pool, val, data, preset))
    return point


def probe_random(preset: Preset, data) -> dict:
    """Random init of the runs' architecture, seeded as main_croc seeds its student."""
    train = preset.train
    torch.manual_seed(train.seed)  # main_croc builds its student right after seeding with --seed
    model = load_backbone(train.arch, train.patch_size, device=preset.device, verbose=False)
    print("[random] ", end="", flush=True)
    return {"images_seen": 0, "epoch": 0, **measure(model, data, preset)}


def probe_run(preset: Preset, run_dir: Path, data, name: str, last_only: bool = False) -> list[dict]:
    """The teacher of every periodic checkpoint of one run (or of its last one), measured."""
    train, points = preset.train, []
    for ckpt in checkpoints(run_dir)[-1:] if last_only else checkpoints(run_dir):
        model = load_backbone(train.arch, train.patch_size, str(ckpt), "teacher", preset.device, verbose=False)
        print(f"[{name} {ckpt.name}] ", end="", flush=True)
        epochs = epochs_done(ckpt)
        points.append({"images_seen": train.images_after(epochs), "epoch": epochs, "checkpoint": str(ckpt),
                       **measure(model, data, preset)})
    return points


def probe_references(preset: Preset, data, output_dir: Path) -> dict:
    """Floors (fixed features) and the supervised ceiling, measured like the backbones: name -> [point]."""
    out, train = {}, preset.train
    if preset.floors:
        for name in FLOORS:
            print(f"[{name}] ", end="", flush=True)
            pool, val = (floor_features(name, images, train.patch_size) for images in (data.pool_images,
                                                                                        data.val_images))
            out[name] = [{"images_seen": 0, "epoch": 0, **measure_features(pool, val, data, preset)}]
    if preset.supervised is not None:
        scenes = SyntheticScenes("train", train.synthetic_num_images, train.synthetic_size, train.seed, cache=True,
                                 style=train.synthetic_style)
        model, info = train_supervised(train.arch, train.patch_size, scenes, preset.supervised, device=preset.device,
                                       log_every=max(1, preset.supervised.steps // 5))
        torch.save({"teacher": model.state_dict()}, output_dir / "supervised.pth")
        print("[supervised] ", end="", flush=True)
        out["supervised"] = [{"images_seen": info["images_seen"], "epoch": 0, "training": info,
                              **measure(model, data, preset)}]
    return out
