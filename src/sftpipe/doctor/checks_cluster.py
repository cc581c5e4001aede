"""Checks for training on several machines: every process must read and write one run folder."""

from __future__ import annotations

import os
from pathlib import Path

from ..distributed import shared_folder_problem
from .base import Outcome, check, fail, ok, skip
from .context import Context

SHARE_FIX = ("put train.output_dir on a filesystem every node mounts at the same path (NFS, Lustre, a cloud file "
             "share), then run this check again on every node")


@check("shared-run-folder")
def shared_run_folder(ctx: Context) -> Outcome:
    """Checklist: "Log checkpoints with data hash, hyperparameters, and eval rubric scores." On several machines
    every process writes and reads those checkpoints (and RNG states, markers) in the run folder, so
    train.output_dir must be one folder that every node mounts at the same path.

    Launched like training (torchrun on every node), every process writes a probe file into train.output_dir and
    looks for every other's; launched alone, it says how to launch it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return skip("one process: launch it as training is launched, on every node (torchrun --nnodes N ... -m "
                    "sftpipe.cli doctor -c CONFIG --check shared-run-folder), to probe train.output_dir from every "
                    "process")
    import torch.distributed as dist

    folder = Path(ctx.cfg.train.output_dir)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group("gloo")
    try:
        if dist.get_rank() == 0:
            folder.mkdir(parents=True, exist_ok=True)
        problem = shared_folder_problem(folder)  # rank 0 makes the folder before it sends the probe name
    finally:
        if started:
            dist.destroy_process_group()
    if problem is None:
        return ok(f"{world} processes each saw every other's probe file in {folder}")
    return fail(problem, SHARE_FIX)
