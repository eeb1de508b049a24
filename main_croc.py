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

Rerunning the same command resumes from ``output_dir/checkpoint.pth``. SIGTERM (SLURM pre-emption) saves and exits.
Spec: ``croc-algorithm.md`` sections 4, 5 and 7.
"""

import datetime
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from itertools import islice

import torch
from torch import nn

from croc_utils import distributed as du
from croc_utils.checkpoint import (
    CheckpointError,
    network_state,
    remove_partial_saves,
    restart_from_checkpoint,
    save_checkpoint,
)
from croc_utils.clustering import cluster_views, student_cluster_tokens
from croc_utils.datasets import build_pretrain_dataset, build_pretrain_loader
from croc_utils.logging import MetricLogger, TensorboardWriter
from croc_utils.loss import CrOCLoss
from croc_utils.monitor import CollapseWatch, non_finite_message  # [issue 13]
from croc_utils.optim import (
    build_optimizer,
    cancel_gradients_last_layer,
    clip_gradients,
    cosine_scheduler,
    ema_update,
    get_params_groups,
)
from croc_utils.parser import parse_args
from croc_utils.transforms import CrOCAugmentation
from models import CrOCHead, CrOCNetwork, build_backbone

DEMO_HINT = "for a first run without any dataset, use the demo command of README.md (--dataset_type synthetic)"


class NonFiniteLoss(RuntimeError):
    pass


def build_network(args, drop_path_rate: float) -> CrOCNetwork:
    backbone = build_backbone(args.arch, patch_size=args.patch_size, drop_path_rate=drop_path_rate,
                              which_features=args.which_features)
    head = CrOCHead(backbone.embed_dim, args.out_dim, args.out_dim_c, use_bn=args.use_bn_in_head,
                    norm_last_layer=args.norm_last_layer)
    return CrOCNetwork(backbone, head)


def train_croc(args):
    device = du.init_distributed_mode(args)
    du.fix_random_seeds(args.seed + args.rank)

    # ============ preparing data ... ============
    transform = CrOCAugmentation(args.global_crops_scale, args.global_crops_size, args.patch_size,
                                 args.local_crops_number, args.local_crops_scale, args.local_crops_size)
    try:  # before any model is built: a missing dataset is a one-line error
        dataset = build_pretrain_dataset(args, transform)
        data_loader, sampler = build_pretrain_loader(dataset, args.batch_size_per_gpu, args.num_workers, args.seed,
                                                     distributed=args.distributed)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err} ({DEMO_HINT})")
    print("\n".join(f"{k}: {v}" for k, v in sorted(vars(args).items())))
    if du.is_main_process():
        with open(os.path.join(args.output_dir, "args.json"), "w") as f:
            json.dump(vars(args), f, indent=1)
    print(f"Data loaded: {len(dataset)} images, {len(data_loader)} iterations per epoch.")
    use_amp = args.use_fp16 and device.type == "cuda"
    if args.use_fp16 and not use_amp:
        print(f"Notice: --use_fp16 is ignored on {device.type}; training in float32.")

    # ============ building student and teacher networks ... ============
    student = build_network(args, args.drop_path_rate).to(device)
    teacher = build_network(args, 0.0).to(device)
    if args.distributed and args.use_bn_in_head:
        student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
        teacher = nn.SyncBatchNorm.convert_sync_batchnorm(teacher)
    teacher_without_ddp, student_without_ddp = teacher, student
    if args.distributed:  # DDP broadcasts rank 0's weights: copy the teacher afterwards
        student = nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    teacher.load_state_dict(student_without_ddp.state_dict(), strict=True)
    teacher.requires_grad_(False)
    n_heads = student_without_ddp.backbone.num_heads
    print(f"Student and teacher are built: both are {args.arch}/{args.patch_size} networks.")

    # ============ preparing loss, optimizer and schedules ... ============
    croc_loss = CrOCLoss(out_dim=args.out_dim, out_dim_c=args.out_dim_c, ncrops=args.local_crops_number + 2,
                         warmup_teacher_temp=args.warmup_teacher_temp, teacher_temp=args.teacher_temp,
                         warmup_teacher_temp_c=args.warmup_teacher_temp_c, teacher_temp_c=args.teacher_temp_c,
                         warmup_teacher_temp_epochs=args.warmup_teacher_temp_epochs, nepochs=args.epochs,
                         student_temp_c=args.student_temp_c).to(device)
    collapse_watch = CollapseWatch(args.out_dim, args.out_dim_c, warmup_epochs=args.warmup_epochs)  # [issue 13]
    optimizer = build_optimizer(args.optimizer, get_params_groups(student_without_ddp))
    fp16_scaler = torch.amp.GradScaler("cuda") if use_amp else None
    niter = len(data_loader)
    lr_schedule = cosine_scheduler(args.lr * args.batch_size_per_gpu * args.world_size / 256.0, args.min_lr,
                                   args.epochs, niter, warmup_epochs=args.warmup_epochs)
    wd_schedule = cosine_scheduler(args.weight_decay, args.weight_decay_end, args.epochs, niter)
    momentum_schedule = cosine_scheduler(args.momentum_teacher, 1.0, args.epochs, niter)

    # ============ optionally resume training ... ============
    if du.is_main_process():  # [issue 14] temp files of saves that a kill interrupted (only ours, by name)
        remove_partial_saves(args.output_dir)
    run_variables = {"epoch": 0, "iteration": 0}
    ckpt_path = os.path.join(args.output_dir, "checkpoint.pth")
    if restart_from_checkpoint(ckpt_path, run_variables, student=student, teacher=teacher, optimizer=optimizer,
                               fp16_scaler=fp16_scaler, croc_loss=croc_loss):
        print(f"Resumed from {ckpt_path} at epoch {run_variables['epoch']}, iteration {run_variables['iteration']}.")
    start_epoch, skip_iters = run_variables["epoch"], run_variables["iteration"]

    stop = {"requested": False}
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    tb = TensorboardWriter(args.output_dir if args.tensorboard and du.is_main_process() else None)

    def checkpoint(epoch: int, iteration: int = 0) -> dict:
        state = {"student": network_state(student, ddp_prefix=True), "teacher": network_state(teacher, False),
                 "optimizer": optimizer.state_dict(), "epoch": epoch, "iteration": iteration, "args": args,
                 "croc_loss": croc_loss.state_dict()}
        if fp16_scaler is not None:
            state["fp16_scaler"] = fp16_scaler.state_dict()
        return state

    start_time = time.time()
    print(f"Starting CrOC training from epoch {start_epoch} to {args.epochs}.")
    for epoch in range(start_epoch, args.epochs):
        sampler.set_epoch(epoch)
        du.fix_random_seeds(args.seed + 1000 * epoch + args.rank)  # an epoch depends only on (seed, epoch, rank)

        # ============ training one epoch of CrOC ... ============
        try:
            stats, stopped_at = train_one_epoch(student, teacher, teacher_without_ddp, student_without_ddp, n_heads,
                                                croc_loss, data_loader, optimizer, lr_schedule, wd_schedule,
                                                momentum_schedule, epoch, fp16_scaler, args, device, stop, skip_iters,
                                                dataset, collapse_watch=collapse_watch)  # [issue 13]
        except NonFiniteLoss as err:
            print(non_finite_message(err, epoch, ckpt_path, fp16=fp16_scaler is not None), force=True)  # [issue 13]
            sys.exit(1)
        skip_iters = 0
        if du.is_main_process():
            if stopped_at is not None:  # SIGTERM: save where we are and leave
                save_checkpoint(checkpoint(epoch, stopped_at), ckpt_path)
            else:
                state = checkpoint(epoch + 1)
                save_checkpoint(state, ckpt_path)
                if args.saveckp_freq and (epoch + 1) % args.saveckp_freq == 0:
                    save_checkpoint(state, os.path.join(args.output_dir, f"checkpoint{epoch:04}.pth"))
                log_stats = {**{f"train_{k}": v for k, v in stats.items()}, "epoch": epoch}
                with open(os.path.join(args.output_dir, "log.txt"), "a") as f:
                    f.write(json.dumps(log_stats) + "\n")
                tb.scalars(stats, epoch)
        if stopped_at is not None:
            print(f"SIGTERM received: saved {ckpt_path} at epoch {epoch}, iteration {stopped_at}; exiting.")
            break
    print(f"Training time {datetime.timedelta(seconds=int(time.time() - start_time))}")
    signal.signal(signal.SIGTERM, previous_handler)
    tb.close()
    du.cleanup()
    return student_without_ddp, teacher_without_ddp


def train_one_epoch(student, teacher, teacher_without_ddp, student_without_ddp, n_heads, croc_loss, data_loader,
                    optimizer, lr_schedule, wd_schedule, momentum_schedule, epoch, fp16_scaler, args, device, stop,
                    skip_iters, dataset, collapse_watch=None):
    """One epoch of spec section 5. Returns (averaged stats, iteration where SIGTERM stopped us or None)."""
    logger = MetricLogger(header=f"Epoch [{epoch}/{args.epochs}]", log_freq=args.log_freq,
                          total=len(data_loader), start=skip_iters)
    amp = autocast_for(device, fp16_scaler)
    for it_in_epoch, batch in enumerate(islice(data_loader, skip_iters, None), start=skip_iters):
        if du.any_process(stop["requested"], device):
            return logger.summary(), it_in_epoch
        it = len(data_loader) * epoch + it_in_epoch  # global iteration
        for i, group in enumerate(optimizer.param_groups):
            group["lr"] = float(lr_schedule[it])
            if i == 0:  # only the regularised group is decayed
                group["weight_decay"] = float(wd_schedule[it])
        loss, dino_term, cluster_term, clusters = croc_losses(batch, student, teacher, teacher_without_ddp, n_heads,
                                                              croc_loss, epoch, args, device, amp)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise NonFiniteLoss(f"loss is {loss_value} at epoch {epoch}, iteration {it_in_epoch}")
        update_student(loss, optimizer, student_without_ddp, fp16_scaler, epoch, args)
        ema_update(teacher_without_ddp, student_without_ddp, float(momentum_schedule[it]))

        diagnostics = croc_loss.diagnostics()  # [issue 13]
        logger.update(n_images=len(batch["crops"][0]) * args.world_size, loss=loss_value, d_loss=dino_term,
                      s_loss=cluster_term, mean_k=clusters.n_clusters.float().mean(),
                      lr=optimizer.param_groups[0]["lr"], wd=optimizer.param_groups[0]["weight_decay"],
                      **diagnostics)
        if collapse_watch is not None:  # [issue 13]
            collapse_watch.update(**diagnostics)
    stats = logger.summary()
    if collapse_watch is not None:  # [issue 13]
        stats.update(collapse_watch.end_epoch(epoch))
    stats.update(dataset.skipped_this_epoch(epoch))  # [issue 13] skipped_images, skipped_files
    return stats, None


def autocast_for(device: torch.device, fp16_scaler) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.float16, enabled=fp16_scaler is not None)


def croc_losses(batch, student, teacher, teacher_without_ddp, n_heads, croc_loss, epoch, args, device, amp,
                timer=lambda name: nullcontext()):
    """Forward of one step: teacher on views 1-2, clustering, student on views 3-4 (+ local crops), the loss.

    Returns (loss, dino_term, cluster_term, clustering result). ``timer(name)`` brackets each phase (benchmarks).
    """
    with timer("data_to_device"):
        crops = [c.to(device, non_blocking=True) for c in batch["crops"]]
        # view 1's N patch positions then view 2's: (B, 2N, 2)
        positions = torch.cat(batch["patch_positions"][:2], dim=1).to(device, non_blocking=True)
    with torch.no_grad():
        with amp, timer("teacher_forward"):
            teacher_out = teacher(crops[:2])
        if not torch.isfinite(teacher_out.cls_logits).all():  # a diverged student reaches the teacher by EMA
            raise NonFiniteLoss("the teacher's output is not finite (training diverged)")
        with timer("clustering"):
            clusters = cluster_views(
                teacher_out.backbone.keys.flatten(0, 1), teacher_out.backbone.tokens, positions, n_heads,
                n_tokens=args.n_tokens, n_centroids_max=args.n_centroids_max, sinkhorn_lambda=args.sinkhorn_lambda,
                sinkhorn_iterations=args.sinkhorn_iterations, pos_alpha=args.pos_alpha,
                uniform_marginals=args.uniform_marginals, marginals_temp_r=args.marginals_temp_r,
                marginals_temp_c=args.marginals_temp_c)
            with amp:
                teacher_c = teacher_without_ddp.head(torch.cat(clusters.teacher_tokens), cluster=True)
    with amp, timer("student_forward"):
        student_out = student(crops[2:], cluster_pool=lambda tokens: student_cluster_tokens(clusters, tokens, n_heads))
        dino_term, cluster_term = croc_loss(student_out.cls_logits, teacher_out.cls_logits, epoch,
                                            student_out.cluster_logits, teacher_c)
        # With no valid cluster the cluster term is 0 but stays attached to last_layer_c, so DDP sees every grad.
        loss = dino_term + args.alpha_s * cluster_term
    return loss, dino_term, cluster_term, clusters


def update_student(loss, optimizer, student_without_ddp, fp16_scaler, epoch, args, timer=lambda name: nullcontext()):
    """Backward, per-parameter clipping, frozen output layers during the first epochs, optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    with timer("student_backward"):
        (loss if fp16_scaler is None else fp16_scaler.scale(loss)).backward()
    with timer("optimizer"):
        if fp16_scaler is not None:
            fp16_scaler.unscale_(optimizer)  # clip the true gradients
        if args.clip_grad:
            clip_gradients(student_without_ddp, args.clip_grad)
        cancel_gradients_last_layer(epoch, student_without_ddp, args.freeze_last_layer)
        if fp16_scaler is None:
            optimizer.step()
        else:
            fp16_scaler.step(optimizer)
            fp16_scaler.update()


if __name__ == "__main__":
    try:
        args = parse_args()
        os.makedirs(args.output_dir, exist_ok=True)
        train_croc(args)
    except CheckpointError as err:
        sys.exit(f"error: {err}")
