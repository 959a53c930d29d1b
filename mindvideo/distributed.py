"""Multi-process training: run a training function in N processes under torch.distributed.

The training recipes (`mindvideo.train`: `mbm.train_mbm`, `contrastive.train_contrastive`,
`video_diffusion.train_cotrain`) are written for torch.distributed: each process computes its
slice of every global batch and gradients are averaged, so W processes make the updates one
process makes with the whole batch. They work in three settings:

* one process (no process group): the default;
* a process group someone else set up (torchrun, a test, a cluster launcher): they read the
  rank and world size from it;
* `launch(fn, payload, processes, device)`: the stages' way when `mvbench run --processes N`
  asks for it. It spawns N processes (gloo on CPU; nccl with one GPU each on CUDA), runs
  `fn(payload, device, report)` in every one, forwards rank 0's progress and metrics to the
  caller as they come, and returns rank 0's result. A failure in any process stops all and is
  raised here with the rank and the original message.
"""

from __future__ import annotations

import os
import pickle
import queue
import socket
import traceback
from collections.abc import Callable
from typing import Any

from mindvideo.errors import ConfigError, DataError, MindVideoError

# fn(payload, device, report) -> result; report(kind, *args) with kind "progress" (n, what)
# or "metric" (name, value, step); only rank 0's reports reach the caller.
TrainFn = Callable[[Any, str, Callable[..., None]], Any]


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the current process group; (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_divisible(batch_size: int, key: str) -> tuple[int, int, int]:
    """(rank, world, local batch) for a global batch split over the processes."""
    rank, world = rank_and_world()
    if batch_size % world:
        raise ConfigError(
            f"{key} {batch_size} must be a multiple of the {world} processes "
            "(change it or --processes)"
        )
    return rank, world, batch_size // world


def wrap_ddp(module, device: str):
    """`module` inside DistributedDataParallel when a process group is up; else itself."""
    _, world = rank_and_world()
    if world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device] if device.startswith("cuda") else None
    return DistributedDataParallel(module, device_ids=ids)


def callbacks(report) -> tuple[Callable[[int, str], None], Callable[..., None]]:
    """A launch `report` as the (progress, log_metric) pair the training functions take."""

    def progress(n: int, what: str) -> None:
        report("progress", n, what)

    def log_metric(name: str, value: float, step: int | None = None) -> None:
        report("metric", name, value, step)

    return progress, log_metric


def cpu_weights(module) -> dict:
    """A module's state dict as contiguous CPU tensors (to save, or to return from a process)."""
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, device: str, fn: TrainFn, blob, events) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    on_gpu = device.startswith("cuda")
    if on_gpu:
        device = f"cuda:{rank}"
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    try:
        dist.init_process_group("nccl" if on_gpu else "gloo", rank=rank, world_size=world)
        try:

            def report(kind: str, *args) -> None:
                if rank == 0:
                    events.put((kind, args))

            result = fn(pickle.loads(blob), device, report)
            if rank == 0:
                # plain pickle: tensors travel as bytes, not as shared memory that would
                # vanish with this process
                events.put(("result", (pickle.dumps(result, protocol=5),)))
            dist.barrier()  # nobody tears the group down while a peer still uses it
        finally:
            dist.destroy_process_group()
    except BaseException as e:  # noqa: BLE001 - every failure is reported to the parent
        kind = type(e).__name__ if isinstance(e, MindVideoError) else "error"
        events.put(("failed", (rank, kind, str(e), traceback.format_exc())))
        raise SystemExit(1) from None
    # Done: deliver the events, then leave without the interpreter's teardown, where the
    # collective backend's threads can abort the process ("terminate called without an
    # active exception") after all the work succeeded.
    events.close()
    events.join_thread()
    os._exit(0)


def all_gather_with_grad(x):
    """Concatenate every process's `x` (same shape) in rank order, differentiably: the
    gradient of each process's slice is the sum of the gradients all processes give it."""
    import torch
    import torch.distributed as dist

    class AllGather(torch.autograd.Function):
        @staticmethod
        def forward(ctx, tensor):
            parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, tensor.contiguous())
            return torch.cat(parts)

        @staticmethod
        def backward(ctx, grad):
            grad = grad.contiguous()
            dist.all_reduce(grad)  # sum over processes (gloo has no reduce_scatter)
            n = grad.shape[0] // dist.get_world_size()
            return grad[dist.get_rank() * n : (dist.get_rank() + 1) * n]

    return AllGather.apply(x)


def launch(
    fn: TrainFn,
    payload: Any,
    processes: int,
    device: str = "cpu",
    progress: Callable[[int, str], None] | None = None,
    log_metric: Callable[[str, float, int | None], None] | None = None,
) -> Any:
    """Run `fn` in `processes` processes under torch.distributed; rank 0's result.

    `fn` and `payload` must pickle (a module-level function; arrays, configs, state dicts):
    the processes are spawned, not forked, which is safe with CUDA and OpenMP.
    """
    if processes < 1:
        raise ConfigError(f"--processes {processes}: need at least 1")
    progress = progress or (lambda n, what: None)
    log_metric = log_metric or (lambda name, value, step=None: None)

    def report(kind: str, *args) -> None:
        (progress if kind == "progress" else log_metric)(*args)

    if processes == 1:
        return fn(payload, device, report)
    import torch
    import torch.multiprocessing as mp

    if device.startswith("cuda") and torch.cuda.device_count() < processes:
        raise ConfigError(
            f"--processes {processes} on {device}: only {torch.cuda.device_count()} GPUs visible "
            "(one process per GPU; check CUDA_VISIBLE_DEVICES)"
        )
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    # Plain pickle: every process gets its own copy of the payload's tensors. (Passed as they
    # are, torch would share their memory between the processes, and each process's optimiser
    # would update the same weights.)
    blob = pickle.dumps(payload, protocol=5)
    args = (processes, _free_port(), device, fn, blob, events)
    workers = mp.start_processes(
        _worker, args=args, nprocs=processes, join=False, start_method="spawn"
    )
    result, have_result = None, False
    failures: list[tuple] = []  # (rank, kind, message, traceback) as the processes told them
    crashed: tuple | None = None  # what join() saw first
    try:
        done = False
        while not done:
            try:
                done = workers.join(timeout=0.2)
            except mp.ProcessExitedException as e:  # a process died (exception or signal)
                done = True
                crashed = (e.error_index, "error", f"exited with code {e.exit_code}", "")
            while True:  # the events so far, in order
                try:
                    kind, items = events.get(timeout=0.1) if done else events.get_nowait()
                except queue.Empty:
                    break
                if kind == "result":
                    result, have_result = pickle.loads(items[0]), True
                elif kind == "failed":
                    failures.append(items)
                else:
                    report(kind, *items)
    finally:
        for p in workers.processes:
            if p.is_alive():
                p.terminate()
        for p in workers.processes:
            p.join()
    if failures or crashed:
        # our own errors (bad config or data) first: the others are their consequences
        ours = [f for f in failures if f[1] != "error"]
        rank, kind, message, trace = (ours or failures or [crashed])[0]
        error = {"ConfigError": ConfigError, "DataError": DataError}.get(kind)
        if error is not None:
            raise error(message)
        if not trace:
            message += " (before it could report why: see its output above)"
        raise RuntimeError(f"training process {rank} of {processes} failed: {message}\n{trace}")
    if not have_result:
        raise RuntimeError(f"training under {processes} processes ended without a result")
    return result
