"""CrOC pretraining: Cross-View Online Clustering for Dense Visual Representation Learning (CVPR 2023).

Launch (the same script everywhere):
    # CPU, or one GPU, no launcher (the demo: embedded synthetic data, a few minutes on 2 CPU cores)
    python main_croc.py --dataset_type synthetic --arch vit_tiny --global_crops_size 96 --epochs 4 ...
    # one node, 8 GPUs
    torchrun --nproc_per_node=8 main_croc.py --dataset_type coco --coco_path /data/coco --output_dir runs/croc
    python -m torch.distributed.launch --nproc_per_node=8 main_croc.py --dataset_type coco --coco_path /data/coco
    # several nodes: torchrun --nnodes=N --node_rank=R --master_addr=HOST --master_port=29500 --nproc_per_node=8 ...
    # SLURM: srun python main_croc.py ... (SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID; set MASTER_ADDR/PORT or
    #        pass --dist_url tcp://HOST:PORT)

Rerunning the same command resumes from ``output_dir/checkpoint.pth`` (or the newest readable snapshot when it is
missing); one run at a time per ``--output_dir`` (croc_utils/run_dir.py). SIGTERM (SLURM pre-emption) saves and exits.
The method: docs/algorithm.md; what each module holds: docs/architecture.md; what survives what:
docs/reliability.md.
"""

import datetime
import os
import signal
import sys
import time

import torch

from croc_utils import distributed as du
from croc_utils.atomic_io import DiskFullError, save_checkpoint
from croc_utils.checkpoint import (
    CheckpointError,
    images_seen,
    load_checkpoint,
    network_state,
    restart_from_checkpoint,
    resume_position,
    unwrap,
)
from croc_utils.clustering import ClusteringConfig
from croc_utils.datasets import DataConfigError, UnreadableDataError, build_pretrain_dataset, build_pretrain_loader
from croc_utils.logging import MetricLogger, TensorboardWriter, append_log_line
from croc_utils.monitor import CollapseWatch, non_finite_cause, non_finite_message
from croc_utils.optim import Schedules, build_optimizer, get_params_groups
from croc_utils.parser import parse_args
from croc_utils.rng import CHECKPOINT_KEY as RNG_KEY
from croc_utils.rng import gather_rng_states, restore_rng_states
from croc_utils.run_dir import OutputDirError, RunDir
from croc_utils.step import Precision, build_loss, forward_step, update_student, update_teacher
from croc_utils.transforms import CrOCAugmentation
from models.network import build_networks

DEMO_HINT = "for a first run without any dataset, use the quick-start command of README.md (--dataset_type synthetic)"


class NonFiniteLoss(RuntimeError):
    pass


def train_croc(args):
    """Set up the processes, take --output_dir (global rank 0 locks it: one run per folder), train, let it go."""
    device = du.init_distributed_mode(args)
    stop = {"requested": False}  # SIGTERM (SLURM pre-emption): save where we are and leave
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    try:
        with RunDir.open(args.output_dir) as run_dir:  # also chooses the checkpoint to resume from
            return train(args, device, run_dir=run_dir, stop=stop)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)


def train(args, device: torch.device, *, run_dir: RunDir, stop: dict):
    """Data, networks, loss and optimizer, resume, the epoch loop; rank 0 writes the checkpoints and log.txt."""
    du.fix_random_seeds(args.seed + args.rank)

    # ============ preparing data ... ============
    transform = CrOCAugmentation.from_args(args)
    try:  # before any model is built: a missing dataset is a one-line error
        dataset = build_pretrain_dataset(args, transform)
        data_loader, sampler = build_pretrain_loader(dataset, args.batch_size_per_gpu, args.num_workers, args.seed,
                                                     distributed=args.distributed, pin_memory=device.type == "cuda",
                                                     prefetch_factor=args.prefetch_factor)
    except DataConfigError as err:  # a data flag's own error; any other exception keeps its traceback
        sys.exit(f"error: {err} ({DEMO_HINT})")
    print("\n".join(f"{k}: {v}" for k, v in sorted(vars(args).items())))
    print(f"Data loaded: {len(dataset)} images, {len(data_loader)} iterations per epoch.")
    precision = Precision.from_args(args, device)
    if args.use_fp16 and args.precision is None and precision.name == "fp32":
        print(f"Notice: --use_fp16 is ignored on {device.type}; training in float32 (--precision bf16 for mixed "
              "precision here).")

    # ============ building student and teacher networks ... ============
    student, teacher = build_networks(args, device)
    student_without_ddp = unwrap(student)
    print(f"Student and teacher are built: both are {args.arch}/{args.patch_size} networks, precision "
          f"{precision.name}.")

    # ============ preparing loss, optimizer and schedules ... ============
    croc_loss = build_loss(args).to(device)
    optimizer = build_optimizer(args.optimizer, get_params_groups(student_without_ddp), device)
    schedules = Schedules.from_args(args, len(data_loader), args.world_size)
    collapse_watch = CollapseWatch(args.out_dim, args.out_dim_c, warmup_epochs=args.warmup_epochs)

    # ============ optionally resume training ... ============
    run_variables = {"epoch": 0, "iteration": 0, "images_seen": None, "args": None}
    ckpt_path = os.path.join(args.output_dir, "checkpoint.pth")
    resume = run_dir.resume_path  # checkpoint.pth, or the newest readable snapshot when it is missing or unreadable
    resumed_rng = {}  # the random-number states saved with the checkpoint, for a resume in the middle of an epoch
    if resume:
        ckpt = run_dir.take_loaded() or load_checkpoint(resume)
        restart_from_checkpoint(resume, run_variables, loaded=ckpt, student=student, teacher=teacher,
                                optimizer=optimizer, fp16_scaler=precision.scaler, croc_loss=croc_loss)
        resumed_rng = {RNG_KEY: ckpt.get(RNG_KEY)}
        del ckpt
        print(f"Resumed from {resume} at epoch {run_variables['epoch']}, iteration {run_variables['iteration']}.")
    images_per_step = args.batch_size_per_gpu * args.world_size
    start_epoch, start_iter = resume_position(run_variables, images_per_step=images_per_step,
                                              steps_per_epoch=len(data_loader))
    run_dir.accept(args, start_epoch)  # only now: args.json, log.txt cut back to start_epoch

    tb = TensorboardWriter(args.output_dir if args.tensorboard and du.is_main_process() else None)

    def checkpoint(epoch: int, iteration: int, rng_states: list) -> dict:
        state = {"student": network_state(student, ddp_prefix=True), "teacher": network_state(teacher, False),
                 "optimizer": optimizer.state_dict(), "epoch": epoch, "iteration": iteration, "args": args,
                 "croc_loss": croc_loss.state_dict(), "images_seen": images_seen(iteration, images_per_step),
                 RNG_KEY: rng_states}
        if precision.scaler is not None:
            state["fp16_scaler"] = precision.scaler.state_dict()
        return state

    start_time = time.time()
    print(f"Starting CrOC training from epoch {start_epoch} to {args.epochs}.")
    for epoch in range(start_epoch, args.epochs):
        # a resume in the middle of the epoch: the sampler skips the batches already trained on (nothing of them is
        # read), and the generators continue where the checkpoint left them
        sampler.set_epoch(epoch, start=start_iter * args.batch_size_per_gpu)
        du.fix_random_seeds(args.seed + 1000 * epoch + args.rank)  # an epoch depends only on (seed, epoch, rank)
        if start_iter:
            restore_rng_states(resumed_rng, resume)

        # ============ training one epoch of CrOC ... ============
        try:
            stats, stopped_at = train_one_epoch(student, teacher, croc_loss, data_loader, optimizer, schedules, epoch,
                                                precision, args, device=device, stop=stop, start_iter=start_iter,
                                                collapse_watch=collapse_watch)
        except NonFiniteLoss as err:
            print(non_finite_message(err, epoch, ckpt_path, fp16=precision.scaler is not None), force=True)
            sys.exit(1)
        start_iter = 0
        mid_epoch = stopped_at is not None and stopped_at < len(data_loader)

        # ============ writing logs and checkpoints ... ============
        rng_states = gather_rng_states()  # every rank's generators (a collective), for an exact resume
        if du.is_main_process():
            if mid_epoch:  # SIGTERM: save where we are and leave
                save_checkpoint(checkpoint(epoch, stopped_at, rng_states), ckpt_path)
            else:  # the log line first: a resume cuts the lines of epochs that its checkpoint has not seen
                if stats:  # empty when the epoch ran no step: no line that would read as if it trained
                    append_log_line(os.path.join(args.output_dir, "log.txt"),
                                    {**{f"train_{k}": v for k, v in stats.items()}, "epoch": epoch})
                    tb.scalars(stats, epoch)
                state = checkpoint(epoch + 1, 0, rng_states)
                save_checkpoint(state, ckpt_path)
                if args.saveckp_freq and (epoch + 1) % args.saveckp_freq == 0:
                    save_checkpoint(state, os.path.join(args.output_dir, f"checkpoint{epoch:04}.pth"))
        if stopped_at is not None:
            where = f"epoch {epoch}, iteration {stopped_at}" if mid_epoch else f"the end of epoch {epoch}"
            print(f"SIGTERM received: saved {ckpt_path} at {where}; exiting.")
            break
    print(f"Training time {datetime.timedelta(seconds=int(time.time() - start_time))}")
    tb.close()
    du.cleanup()
    return student_without_ddp, teacher


def train_one_epoch(student, teacher, croc_loss, data_loader, optimizer, schedules, epoch, precision, args, *,
                    device: torch.device, stop: dict, start_iter: int = 0, collapse_watch: CollapseWatch | None = None):
    """One epoch (docs/algorithm.md sections 3-5), from batch ``start_iter`` on (the sampler has skipped the batches
    before it: ``data_loader`` yields batch ``start_iter`` first).

    Returns (averaged stats, None), or (stats, n) when SIGTERM stopped the epoch after its step n - 1 (the step in
    flight when the signal came is completed, so that the saved state is one the uninterrupted run passes through);
    n equals ``len(data_loader)`` when that was the epoch's last step. The stats are empty when no step ran. One host
    sync per step: the check that every process is healthy (finite loss and teacher output) and whether any was asked
    to stop.
    """
    logger = MetricLogger(header=f"Epoch [{epoch}/{args.epochs}]", log_freq=args.log_freq,
                          total=len(data_loader), start=start_iter)
    cluster_cfg = ClusteringConfig.from_args(args)
    stopped_at = None
    for it_in_epoch, batch in enumerate(data_loader, start=start_iter):
        it = len(data_loader) * epoch + it_in_epoch  # global iteration
        schedules.apply(optimizer, it)
        out = forward_step(batch, student, teacher, croc_loss, epoch, cluster_cfg=cluster_cfg, alpha_s=args.alpha_s,
                           precision=precision, device=device)
        status = du.step_status(out.healthy, stop["requested"])  # which ranks, if any, are not finite
        if status.unhealthy_ranks:
            raise NonFiniteLoss(non_finite_cause(out.loss.item(), status.unhealthy_ranks, rank=args.rank,
                                                 world_size=args.world_size, iteration=it_in_epoch))
        update_student(out.loss, student, optimizer, epoch, precision=precision, clip_grad=args.clip_grad,
                       freeze_last_layer=args.freeze_last_layer)
        update_teacher(teacher, student, float(schedules.momentum[it]))

        diagnostics = croc_loss.diagnostics()  # teacher entropies and KLs, on the device
        logger.update(n_images=len(batch["crops"][0]) * args.world_size, loss=out.loss, d_loss=out.dino_term,
                      s_loss=out.cluster_term, mean_k=out.clusters.n_clusters.float().mean(),
                      lr=optimizer.param_groups[0]["lr"], wd=optimizer.param_groups[0]["weight_decay"], **diagnostics)
        if collapse_watch is not None:
            collapse_watch.update(**diagnostics)
        if status.stop_requested:
            stopped_at = it_in_epoch + 1
            break
    if stopped_at is not None and stopped_at < len(data_loader):
        return logger.summary(), stopped_at
    if logger.count == 0:  # nothing was left of the epoch: no loss, no throughput to report
        print(f"Notice: epoch {epoch} ran no iteration (it starts at {start_iter} of {len(data_loader)}).")
        return {}, None
    stats = logger.summary()
    if collapse_watch is not None:
        stats.update(collapse_watch.end_epoch(epoch))
    stats.update(data_loader.dataset.skipped_this_epoch(epoch))
    return stats, stopped_at


def main(argv=None) -> None:
    """The command line. A refused start, a bad checkpoint or a full disk ends in one line and exit status 1."""
    args = parse_args(argv)
    try:
        train_croc(args)
    except (CheckpointError, UnreadableDataError, OutputDirError, DiskFullError) as err:
        if not getattr(err, "from_rank0", False):  # rank 0's refusal, shared with every rank: rank 0 says it
            sys.stderr.write(f"error: {err}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
