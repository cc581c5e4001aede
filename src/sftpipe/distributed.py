"""What sftpipe asks of a process group (torchrun / accelerate launch): wait for all, agree on a flag, and check
that a folder every process writes into is one shared folder. Each is a no-op without a process group.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from pathlib import Path

from .errors import ConfigError


def _group() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _tensor(values: list[int]):
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    return torch.tensor(values, dtype=torch.int64, device=device)


def barrier() -> None:
    """Wait for every process."""
    import torch.distributed as dist

    if _group():
        dist.barrier()


def all_ok(ok: bool) -> bool:
    """Whether every process passed `ok` (`ok` itself without a process group). A collective: every process
    calls it, and each waits for the others."""
    import torch.distributed as dist

    if not _group():
        return ok
    flag = _tensor([int(ok)])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def unseen_probes(folder: Path) -> list[int]:
    """The processes whose probe file this process cannot see in `folder` (empty when every process writes into
    the same folder, or without a process group). Every process writes one probe, waits for the others and looks
    for theirs; the probes are removed afterwards. A collective."""
    import torch.distributed as dist

    if not _group() or dist.get_world_size() == 1:
        return []
    rank, world = dist.get_rank(), dist.get_world_size()
    token = _tensor([secrets.randbits(62) if rank == 0 else 0])
    dist.broadcast(token, src=0)  # one name per launch, so no earlier launch's probes count
    probes = Path(folder) / f".shared-probe-{int(token.item()):x}"
    try:
        probes.mkdir(exist_ok=True)  # not parents: a folder missing on this machine is itself the finding
        (probes / str(rank)).write_text(socket.gethostname(), encoding="utf-8")
    except OSError:
        pass
    dist.barrier()
    unseen = [r for r in range(world) if not (probes / str(r)).is_file()]
    dist.barrier()
    if rank == 0 or unseen:  # where the folder is shared, rank 0 removes it; elsewhere each removes its own
        shutil.rmtree(probes, ignore_errors=True)
    return unseen


def shared_folder_problem(folder: Path) -> str | None:
    """None when every process sees every other's probe file in `folder`, else what this process found, in one
    line (the same verdict on every process). A collective."""
    unseen = unseen_probes(folder)
    if all_ok(not unseen):
        return None
    if unseen:
        return (f"process {os.environ.get('RANK', '?')} on {socket.gethostname()} cannot see the files of "
                f"processes {unseen} in {folder}")
    return f"another process cannot see this process's files in {folder} (its error names it)"


def check_shared(folder: Path, key: str) -> None:
    """Refuse to go on unless `folder` (config key `key`) is one folder every process reads and writes: ranks read
    checkpoints, RNG states and markers that others wrote. A collective."""
    problem = shared_folder_problem(folder)
    if problem is not None:
        raise ConfigError(key, [f"{problem}; fix: put {key} on a filesystem every node mounts at the same path "
                                "(NFS, Lustre, a cloud file share) and launch every node with the same config"])
