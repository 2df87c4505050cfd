"""Run a function on W local processes joined by a gloo process group (the DDP equivalence tests)."""

import os
import socket
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
        # Leave together: a rank that tears down its group while a peer is still inside a
        # collective (or still connected) can abort in gloo ("terminate called without an
        # active exception"), which made these tests flaky.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run(fn: Callable, world: int, *args) -> None:
    """Call ``fn(rank, world, *args)`` in this process (world 1) or in ``world`` spawned gloo ranks."""
    if world == 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in the spawned ranks, so the float reductions match
        try:
            fn(0, 1, *args)
        finally:
            torch.set_num_threads(threads)
        return
    mp.start_processes(_worker, args=(world, free_port(), fn, args), nprocs=world, start_method="spawn")
