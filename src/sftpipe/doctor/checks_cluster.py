"""Checks for training on several machines: every process must read and write one run folder."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from ..distributed import all_ok, unseen_probes
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
        unseen = unseen_probes(folder)  # rank 0 makes the folder before it sends the probe name
        everyone = all_ok(not unseen)
    finally:
        if started:
            dist.destroy_process_group()
    if everyone:
        return ok(f"{world} processes each saw every other's probe file in {folder}")
    if unseen:
        return fail(f"process {os.environ.get('RANK', '?')} on {socket.gethostname()} cannot see the probe files of "
                    f"processes {unseen} in {folder}", SHARE_FIX)
    return fail(f"another process cannot see this process's probe file in {folder} (its own report names it)",
                SHARE_FIX)
