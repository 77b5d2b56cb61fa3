"""Several processes: the few collectives datadiet needs, and the checks that ranks agree.

A :class:`Ranks` is the process group as datadiet sees it (rank, world size, the device its
collectives run on: CUDA for NCCL, CPU for gloo). The step engine uses it to make every decision
on the *global* batch (every rank's incoming batch, gathered), so that every rank takes the same
decisions, holds the same filter state and takes the same number of optimizer steps; offline
selections use it to shard their per-example work and gather the results.

Nothing here starts a process group: a launcher (``torchrun``, ``accelerate launch``,
``datadiet train --nproc N``) or the front end does. :func:`current` returns ``None`` in a single
process, so single-process code paths are untouched.

Every collective is preceded by a cheap header exchange that names what the ranks must agree on
(which call this is, the epoch, the buffer, the batch's columns); a disagreement raises
:class:`RankMismatchError` naming each rank's value, instead of hanging in a collective.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import DataDietError


#: the width of a checkpoint's row of integers (:meth:`Ranks.agree`)
HEADER_WIDTH = 8
_POINTS: dict[int, str] = {}  # checkpoint names by their number, to name another rank's point


def point(name: str) -> str:
    """Register a checkpoint name (so a rank can name the point another rank is at); returns it."""
    _POINTS[zlib.crc32(name.encode()) & 0x7FFFFFFF] = name
    return name


#: the checkpoints of the step engine and the plain loop
SUBMIT = point("a batch submitted to the step engine")
FLUSH = point("flushing the step engine's buffer")
FIT_END = point("the end of training")


class RankMismatchError(DataDietError):
    """Ranks disagree on something they must agree on (a step, a batch's columns, a decision)."""


class Ranks:
    """A ``torch.distributed`` process group of two or more ranks (see :func:`current`)."""

    def __init__(self, group: Any = None) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise DataDietError("no torch.distributed process group is initialised; launch with torchrun (or "
                                "accelerate launch) and call torch.distributed.init_process_group first")
        self.group = group
        self.rank = int(dist.get_rank(group))
        self.world_size = int(dist.get_world_size(group))
        self.backend = str(dist.get_backend(group))
        if self.backend == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")

    def __repr__(self) -> str:
        return f"Ranks(rank={self.rank}, world_size={self.world_size}, backend={self.backend!r})"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ collectives
    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``t`` (equal shapes), in rank order, on ``t``'s device."""
        import torch.distributed as dist

        src = t.detach().to(self.device).contiguous()
        out = [torch.empty_like(src) for _ in range(self.world_size)]
        dist.all_gather(out, src, group=self.group)
        return [o.to(t.device) for o in out]

    def exchange(self, values: Sequence[int]) -> list[list[int]]:
        """Every rank's list of integers (same length on every rank), in rank order. A raw collective:
        prefer :meth:`agree`, which checks first that the ranks are at the same point."""
        t = torch.tensor([int(v) for v in values], dtype=torch.int64)
        return [g.tolist() for g in self.all_gather(t)]

    def agree(self, what: str, values: Mapping[str, int], *, extra: Sequence[int] = (), fix: str = "") -> list[list[int]]:
        """A checkpoint: every rank must be at the same point (``what``) with the same ``values``.

        Exchanges one fixed-width row of integers (so ranks at *different* points still meet in the
        same collective and find out), and raises :class:`RankMismatchError` naming each rank's point
        or values if they differ. ``extra``: integers that may differ between ranks (e.g. a batch's
        rows), returned with the values: ``rows[r] = [point, *values, *extra]``."""
        names = list(values)
        point = zlib.crc32(what.encode()) & 0x7FFFFFFF
        _POINTS[point] = what
        row = [point, *(int(values[k]) for k in names), *(int(v) for v in extra)]
        if len(row) > HEADER_WIDTH:
            raise ValueError(f"agree() takes at most {HEADER_WIDTH - 1} values")
        rows = [r[: len(row)] for r in self.exchange(row + [0] * (HEADER_WIDTH - len(row)))]
        points = [r[0] for r in rows]
        if len(set(points)) > 1:
            where = "; ".join(f"rank {i}: {_POINTS.get(p, 'another point of the run')}" for i, p in enumerate(points))
            raise RankMismatchError(
                f"the ranks are at different points of the run ({where}): one rank ran out of batches, or took "
                "another branch, before the others. Every rank must see equally many batches (a distributed sampler "
                f"that gives every rank the same number) and run the same datadiet settings{'; ' + fix if fix else ''}")
        bad = [k for i, k in enumerate(names) if len({r[1 + i] for r in rows}) > 1]
        if bad:
            per_rank = "; ".join(f"rank {r}: " + ", ".join(f"{k}={rows[r][1 + names.index(k)]}" for k in bad)
                                 for r in range(self.world_size))
            raise RankMismatchError(
                f"ranks disagree at {what} ({per_rank}). Every rank must run the same datadiet settings (method, "
                f"filters, batch size) over equally many batches of the same columns{'; ' + fix if fix else ''}")
        return rows

    def gather_rows(self, t: torch.Tensor, *, pad: float | int = 0, what: str = "rows") -> tuple[torch.Tensor, list[int]]:
        """Concatenate every rank's ``t`` along dim 0 (rank order); ranks may hold different row counts
        and, in dim 1, different lengths (shorter rows are right-padded with ``pad``). Returns the
        gathered tensor and each rank's row count. ``what`` names the checkpoint that precedes it."""
        if t.ndim > 3:
            raise ValueError("gather_rows takes tensors of at most 3 dimensions")
        shape = list(t.shape) + [0] * (3 - t.ndim)
        rows = self.agree(f"gathering {what}", {"ndim": t.ndim}, extra=shape)
        counts = [r[2] for r in rows]
        full = [max(counts)] + [max(r[3 + d] for r in rows) for d in range(t.ndim - 1)]
        padded = torch.full(full, pad, dtype=t.dtype, device=t.device)
        if t.numel():
            padded[tuple(slice(0, s) for s in t.shape)] = t
        parts = self.all_gather(padded)
        return torch.cat([p[:n] for p, n in zip(parts, counts)]), counts

    def sum(self, values: Sequence[float], *, what: str = "a sum") -> list[float]:
        """The sum over ranks of each value."""
        import torch.distributed as dist

        self.agree(f"summing {what}", {"n": len(values)})
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, group=self.group)
        return [float(v) for v in t.cpu()]

    def broadcast_object(self, obj: Any, *, src: int = 0) -> Any:
        """``obj`` as rank ``src`` has it (pickled: only between the processes of one job)."""
        import torch.distributed as dist

        self.agree("broadcasting an object", {"src": src})
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src, group=self.group, device=self.device)
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        import torch.distributed as dist

        self.agree("gathering objects", {})
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def barrier(self, what: str = "a barrier") -> None:
        """Wait for every rank (a checkpoint: ranks elsewhere raise instead of waiting)."""
        self.agree(what, {})

    # ------------------------------------------------------------------ sharding
    def shard(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` items (the first ``n % world_size`` ranks get one more)."""
        return shard_slice(n, rank=self.rank, world_size=self.world_size)


def shard_slice(n: int, *, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous share of ``n`` items, as even as possible (earlier ranks get the extra)."""
    base, extra = divmod(int(n), int(world_size))
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def init_from_env(device_type: str = "cpu") -> Ranks | None:
    """Join the process group a launcher describes (``torchrun`` sets ``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR`` / ``MASTER_PORT``): NCCL for CUDA (each rank on GPU
    ``LOCAL_RANK``), gloo for the CPU. Returns ``None`` when the launcher asked for one process."""
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 2:
        return None
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return current()


def is_initialized() -> bool:
    """Whether a ``torch.distributed`` process group is running."""
    import torch.distributed as dist

    return bool(dist.is_available() and dist.is_initialized())


def current(group: Any = None) -> Ranks | None:
    """The running process group as a :class:`Ranks`, or ``None`` in a single process (or a group of one)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    if dist.get_world_size(group) < 2:
        return None
    return Ranks(group)


def columns_digest(batch: Mapping[str, torch.Tensor]) -> int:
    """A number that is equal on two ranks when their batches have the same columns, dtypes and ranks."""
    desc = ";".join(f"{k}:{v.dtype}:{v.ndim}" for k, v in sorted(batch.items()))
    return zlib.crc32(desc.encode())


def tensor_digest(*ts: torch.Tensor | None) -> int:
    """A checksum of tensors' values (e.g. a step's decisions), to compare across ranks."""
    h = 0
    for t in ts:
        if t is not None:
            h = zlib.crc32(t.detach().cpu().contiguous().numpy().tobytes(), h)
    return h
