"""The presets (budgets) of the learning bench and the sweep's configurations, as typed dataclasses.

The recipe of each preset lives here; ``main_croc.py``'s defaults stay the released recipe.
"""

import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from eval.probe import ProbeConfig
from eval.probe_baselines import SupervisedConfig

from .flags import TrainFlags, flag_words

CPU_PRECISION = {"use_fp16": False}
GPU_PRECISION = {"precision": "bf16", "augment_on": "device"}  # colour operations batched on the card
ALPHA_S = {"croc": 1.0, "dino": 0.0}  # run name -> --alpha_s; nothing else differs

# The small-scale recipe on the texture scenes (docs/small_scale_evidence.md, "How the recipe was chosen"): Voronoi
# texture mosaics drawn at 64 px and served from memory, ViT-Pico/8 on 48 px global crops, no blur (it erases the
# textures that define the classes), strong colour augmentation (hue over the whole circle, frequent grayscale: colour
# is the easy shortcut between two views), a narrow head and small output layers. Budgets are set per preset.
TEXTURE_RECIPE = dict(
    synthetic_style="texture", synthetic_size=64, synthetic_cache=True, arch="vit_pico", patch_size=8,
    global_crops_size=48, local_crops_number=0, local_crops_size=24,
    blur_p=(0.0, 0.0, 0.0), solarize_p=(0.0, 0.2, 0.0), hue_jitter=(0.5,), grayscale_p=(0.3,),
    head_hidden_dim=512, out_dim=512, out_dim_c=256, norm_last_layer=False,
    teacher_temp=0.02, warmup_teacher_temp=0.02, teacher_temp_c=0.02, warmup_teacher_temp_c=0.02,
    momentum_teacher=0.99, drop_path_rate=0.0, warmup_epochs=1, min_lr=1e-5, batch_size_per_gpu=32, lr=0.002,
    seed=0, log_freq=50)
# The earlier recipe on the shape-defined "large" scenes (ViT-Ti/16, 96 px crops): the gpu preset's shape variant.
SHAPE_RECIPE = dict(
    synthetic_style="large", synthetic_size=128, synthetic_cache=True, arch="vit_tiny", patch_size=16,
    global_crops_size=96, local_crops_number=4, local_crops_size=48, out_dim=1024, out_dim_c=512, warmup_epochs=1,
    min_lr=1e-5, momentum_teacher=0.99, drop_path_rate=0.0, seed=0, log_freq=20)


@dataclass(frozen=True)
class ProbeScenes:
    """The probe's scenes (``eval.probe_data.synthetic_probe_data``): pool for the probe's training, val to score."""

    pool_images: int
    val_images: int
    input_size: int
    style: str


TEXTURE_PROBE = {"style": "texture", "input_size": 64}
SHAPE_PROBE = {"style": "large", "input_size": 128}


@dataclass(frozen=True)
class Preset:
    """One budget: the training flags shared by the runs, the probe's scenes and settings, the references, how runs
    are launched."""

    train: TrainFlags
    probe_data: ProbeScenes
    probe: ProbeConfig
    runs: tuple[str, ...] = ("croc", "dino")
    floors: bool = True
    ceiling: bool = False  # the supervised ceiling, trained on as many images as one run sees
    device: str = "cpu"
    parallel: bool = False  # train the runs at once (CPU: one thread each)
    threads: int | None = None  # OMP / MKL threads of each training process (None: torch's default)
    eval_split: str = "val"
    retrieval: bool = True  # the dense nearest-neighbour retrieval column (eval.nn_retrieval)
    budget: str = ""

    @property
    def supervised(self) -> SupervisedConfig | None:
        """The ceiling's training: as many images as one run sees (epochs x full batches), the same crops."""
        if not self.ceiling:
            return None
        t = self.train
        return SupervisedConfig(steps=t.epochs * (t.synthetic_num_images // t.batch_size_per_gpu),
                                batch_size=t.batch_size_per_gpu, crop_size=t.global_crops_size)

    def run_flags(self, run: str) -> TrainFlags:
        """The flags of one run: CrOC and DINO-only differ in ``--alpha_s`` only (a one-run preset may set it)."""
        if run in ALPHA_S and self.train.alpha_s is None:
            return replace(self.train, alpha_s=ALPHA_S[run])
        return self.train

    def command(self, run: str, output_dir: Path) -> list[str]:
        """The training process of one run: ``python main_croc.py ...`` (run from the repository root)."""
        argv = self.run_flags(run).argv() + ["--device", self.device, "--output_dir", str(output_dir)]
        return [sys.executable, "main_croc.py", *argv]

    def settings(self) -> dict:
        """Everything the preset sets, JSON-ready (the training flags as their argv)."""
        ceiling = asdict(self.supervised) if self.supervised else None
        return {**asdict(self), "train": self.train.argv(), "supervised": ceiling}


def texture(**budget) -> TrainFlags:
    return TrainFlags(**{**TEXTURE_RECIPE, **budget})


SMOKE_TRAIN = texture(synthetic_num_images=32, synthetic_size=32, global_crops_size=32, head_hidden_dim=64,
                      out_dim=64, out_dim_c=32, batch_size_per_gpu=8, epochs=2, warmup_epochs=0, lr=0.05,
                      momentum_teacher=0.9, saveckp_freq=1, num_workers=0, log_freq=1, **CPU_PRECISION)
CI_TRAIN = texture(synthetic_num_images=1024, epochs=8, saveckp_freq=8, num_workers=0, **CPU_PRECISION)
DEV_TRAIN = texture(synthetic_num_images=2048, epochs=5, saveckp_freq=5, num_workers=0, **CPU_PRECISION)
CPU_TRAIN = texture(synthetic_num_images=4096, epochs=10, saveckp_freq=5, num_workers=0, **CPU_PRECISION)
GPU_TEXTURE_TRAIN = texture(synthetic_num_images=16384, batch_size_per_gpu=256, epochs=60, lr=0.002, warmup_epochs=3,
                            saveckp_freq=10, num_workers=14, **GPU_PRECISION)
GPU_SHAPE_TRAIN = TrainFlags(**SHAPE_RECIPE, synthetic_num_images=8192, batch_size_per_gpu=128, epochs=24, lr=0.004,
                             saveckp_freq=6, num_workers=14, **GPU_PRECISION)
CPU_PROBE = ProbeConfig(n_train=300, seeds=(0, 1, 2), max_iter=300, n_clusters=(0, 100))
GPU_PROBE = replace(CPU_PROBE, n_train=500, max_iter=500, batch_size=256)

PRESETS = {
    "smoke": Preset(
        train=SMOKE_TRAIN, probe_data=ProbeScenes(pool_images=24, val_images=12, input_size=32, style="texture"),
        probe=ProbeConfig(n_train=16, seeds=(0, 1), max_iter=50, n_clusters=(0, 20), pca_dim=16, kmeans_iter=20,
                          kmeans_restarts=1, batch_size=32),
        ceiling=True, parallel=True, threads=1, budget="CPU, < 2 min (CI)"),
    "ci": Preset(
        train=CI_TRAIN, probe_data=ProbeScenes(pool_images=2400, val_images=400, **TEXTURE_PROBE),
        probe=replace(CPU_PROBE, n_train=1600, max_iter=200, n_clusters=(), weight_decays=(1e-5,)),
        runs=("croc",), floors=False, threads=2, eval_split="dev", retrieval=False,  # ~30 s per backbone on 2 cores
        budget="<= 3 min on 2 cores (tests/test_learning.py: CrOC's probe beats random init)"),
    "dev": Preset(
        train=DEV_TRAIN, probe_data=ProbeScenes(pool_images=600, val_images=200, **TEXTURE_PROBE),
        probe=replace(CPU_PROBE, n_clusters=()), runs=("croc",), floors=False, parallel=True, threads=1,
        eval_split="dev", budget="<= 5 min per configuration with two side by side on 2 cores (the sweep)"),
    "cpu": Preset(
        train=CPU_TRAIN, probe_data=ProbeScenes(pool_images=600, val_images=200, **TEXTURE_PROBE), probe=CPU_PROBE,
        ceiling=True, parallel=True, threads=1, budget="<= 30 min on an idle 2-core CPU"),
    "gpu_texture": Preset(
        train=GPU_TEXTURE_TRAIN, probe_data=ProbeScenes(pool_images=1000, val_images=500, **TEXTURE_PROBE),
        probe=GPU_PROBE, ceiling=True, device="auto", budget="<= 4 min on one H200 (estimate)"),
    "gpu_shape": Preset(
        train=GPU_SHAPE_TRAIN, probe_data=ProbeScenes(pool_images=1000, val_images=500, **SHAPE_PROBE),
        probe=GPU_PROBE, device="auto", budget="<= 4 min on one H200 (estimate)"),
}
PRESET_GROUPS = {"gpu": ("gpu_texture", "gpu_shape")}  # one command, one sub-folder per preset
PUBLISHED = ("cpu", "gpu_texture", "gpu_shape")  # the presets whose val-split results --publish writes to figures/

# The dev-preset configurations of ``--sweep``: name -> typed main_croc.py flags overriding the dev preset. Read the
# table (docs/small_scale_evidence.md, "How the recipe was chosen") before adding one; every configuration is scored
# on the dev split only.
SWEEP = {
    "base": {},
    "dino_only": {"alpha_s": 0.0},
    "teacher_temp_0.04": {"teacher_temp": 0.04, "warmup_teacher_temp": 0.04, "teacher_temp_c": 0.04,
                          "warmup_teacher_temp_c": 0.04},
    "teacher_temp_warmup": {"warmup_teacher_temp": 0.04, "warmup_teacher_temp_c": 0.04,
                            "warmup_teacher_temp_epochs": 3},
    "norm_last_layer_true": {"norm_last_layer": True},
    "lr_x4": {"lr": 0.008},
    "lr_div4": {"lr": 0.0005},
    "momentum_0.996": {"momentum_teacher": 0.996},
    "local_crops_4": {"local_crops_number": 4},
    "alpha_s_3": {"alpha_s": 3.0},
    "pos_alpha_0": {"pos_alpha": 0.0},
    "n_tokens_8": {"n_tokens": 8, "n_centroids_max": 6},
    "sinkhorn_knopp": {"teacher_centering": "sinkhorn_knopp"},
    "colour_released": {"hue_jitter": (0.1,), "grayscale_p": (0.2,)},
}


def override_words(values: dict) -> str:
    """``{"lr": 0.008}`` -> ``"--lr 0.008"``: a configuration's flags as a reader types them."""
    return " ".join(flag_words(values.items()))
