"""Trainer callbacks of the library: completion markers that make checkpoints safe to resume from.

The Trainer writes `checkpoint-<step>/` in place, file by file. Only after every process has finished writing does
`CheckpointMarker` write the marker (see `sftpipe.runs.checkpoints`). Progress display lives in the stage layer.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from ..runs.checkpoints import write_marker


class CheckpointMarker(TrainerCallback):
    """After each save, wait for all processes, then mark the checkpoint complete (main process)."""

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        if state.is_world_process_zero:
            write_marker(Path(args.output_dir) / f"checkpoint-{state.global_step}", state.global_step)
        return control
