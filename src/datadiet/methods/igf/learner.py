"""The secondary learner Q: a small network from a context's tokens to its predicted IG (z-score).

Reference architecture (Antonello et al. 2021): token embeddings initialised from the language
model's and trainable, ``Conv1d(d -> 256, kernel 3)``, ReLU, max-pool over time, then
``Linear 256 -> 32 -> 32 -> 1`` with ReLUs; MSE; Adam (lr 1e-5), batch 128, 15 epochs, keeping the
checkpoint with the best validation MSE.

The embedding matrix is a *copy* of the LM's input embeddings: training Q never touches the
fine-tuned model's module (the reference code untied GPT-2's embeddings by accident; tested here).

A trained learner is a first-class artefact: :func:`save_learner` / :func:`load_learner` write and
read one file (``datadiet.igf_learner/1``: weights, architecture, the z-score constants of the
pairs it was trained on, and where it came from), so one learner can serve many fine-tunes of the
same corpus, as the paper proposes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import DataDietError

log = logging.getLogger(__name__)
FORMAT = "datadiet.igf_learner/1"


@dataclass(frozen=True)
class LearnerArch:
    vocab_size: int
    dim: int
    channels: int = 256
    kernel: int = 3
    hidden: int = 32


class SecondaryLearner(nn.Module):
    """``input_ids`` [B, T] -> predicted IG z-score [B]."""

    def __init__(self, arch: LearnerArch, *, seed: int = 0) -> None:
        super().__init__()
        self.arch = arch
        with torch.random.fork_rng(devices=[]):  # seeded init; the caller's global RNG is untouched
            torch.manual_seed(int(seed))
            self.embed = nn.Embedding(arch.vocab_size, arch.dim)
            self.conv = nn.Conv1d(arch.dim, arch.channels, arch.kernel)
            self.head = nn.Sequential(nn.Linear(arch.channels, arch.hidden), nn.ReLU(),
                                      nn.Linear(arch.hidden, arch.hidden), nn.ReLU(), nn.Linear(arch.hidden, 1))

    @classmethod
    def from_lm(cls, lm: nn.Module, *, seed: int = 0, **arch: int) -> SecondaryLearner:
        """A learner whose embeddings start as a copy of ``lm``'s input embeddings (the rest seeded)."""
        emb = lm.get_input_embeddings().weight
        q = cls(LearnerArch(vocab_size=int(emb.shape[0]), dim=int(emb.shape[1]), **arch), seed=seed)
        with torch.no_grad():
            q.embed.weight.copy_(emb.detach().float())
        return q

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        k = self.arch.kernel
        if input_ids.shape[1] < k:
            input_ids = nn.functional.pad(input_ids, (0, k - input_ids.shape[1]))
        x = self.embed(input_ids).transpose(1, 2)  # [B, d, T]
        x = torch.relu(self.conv(x)).amax(dim=2)  # max-pool over time
        return self.head(x).squeeze(-1)

    @torch.no_grad()
    def predict(self, input_ids: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        was = self.training
        self.eval()
        try:
            dev = self.embed.weight.device
            out = [self(input_ids[s : s + batch_size].to(dev)).float().cpu()
                   for s in range(0, input_ids.shape[0], batch_size)]
        finally:
            self.train(was)
        return torch.cat(out) if out else torch.zeros(0)


@dataclass
class LearnerFit:
    best_epoch: int
    best_val_mse: float
    val_mse_at_init: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    val_pearson: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mse(q: SecondaryLearner, x: torch.Tensor, y: torch.Tensor) -> float:
    if len(y) == 0:
        return float("nan")
    return float(((q.predict(x) - y) ** 2).mean())


def train_learner(q: SecondaryLearner, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
                  epochs: int = 15, lr: float = 1e-5, batch_size: int = 128, seed: int = 0,
                  freeze_embeddings: bool = False, progress: bool = False) -> LearnerFit:
    """Fit ``q`` by MSE with Adam; keep (load back) the weights of the epoch with the best validation MSE.

    Without validation pairs the last epoch is kept. Deterministic for a given ``seed`` on CPU.
    ``freeze_embeddings``: train only the convolution and the head (the copied LM embeddings stay as
    they are: far fewer trainable parameters for a few hundred pairs).
    """
    t0 = time.perf_counter()
    xt, yt = torch.as_tensor(x, dtype=torch.long), torch.as_tensor(y, dtype=torch.float32)
    xv, yv = torch.as_tensor(x_val, dtype=torch.long), torch.as_tensor(y_val, dtype=torch.float32)
    dev = q.embed.weight.device
    q.embed.weight.requires_grad_(not freeze_embeddings)
    opt = torch.optim.Adam([p for p in q.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    has_val = len(yv) > 0
    init = _mse(q, xv, yv) if has_val else float("nan")
    best = (init, -1, {k: v.detach().clone() for k, v in q.state_dict().items()})
    hist = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, unit="epoch", desc="IGF learner", leave=False, disable=None)
    for ep in range(epochs):
        q.train()
        perm = torch.randperm(len(yt), generator=gen)
        tot = 0.0
        for s in range(0, len(perm), batch_size):
            idx = perm[s : s + batch_size]
            loss = ((q(xt[idx].to(dev)) - yt[idx].to(dev)) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(idx)
        row = {"epoch": ep, "train_mse": tot / max(len(yt), 1)}
        if has_val:
            row["val_mse"] = _mse(q, xv, yv)
            if row["val_mse"] < best[0]:
                best = (row["val_mse"], ep, {k: v.detach().clone() for k, v in q.state_dict().items()})
        hist.append(row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(val=row.get("val_mse"))
    if bar is not None:
        bar.close()
    if has_val:
        q.load_state_dict(best[2])
    else:
        best = (float("nan"), epochs - 1, None)
    q.eval()
    pear = None
    if has_val and len(yv) > 1:
        p = q.predict(xv).numpy()
        if p.std() > 0 and yv.numpy().std() > 0:
            pear = float(np.corrcoef(p, yv.numpy())[0, 1])
    return LearnerFit(best_epoch=int(best[1]), best_val_mse=float(best[0]), val_mse_at_init=float(init), history=hist,
                      seconds=time.perf_counter() - t0, val_pearson=pear)


def save_learner(q: SecondaryLearner, path: str | Path, *, meta: dict[str, Any]) -> Path:
    """Write ``q`` and ``meta`` (z-score constants, provenance) to one file, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "arch": asdict(q.arch), "state_dict": {k: v.detach().cpu() for k, v in q.state_dict().items()},
            "meta": meta}
    tmp = path.with_name(f"{path.name}.tmp{time.monotonic_ns()}")
    try:
        torch.save(blob, tmp)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_learner(path: str | Path) -> tuple[SecondaryLearner, dict[str, Any]]:
    """Read a learner file written by :func:`save_learner`; clear errors for a missing or foreign file."""
    path = Path(path)
    if not path.exists():
        raise DataDietError(f"IGF learner file {str(path)!r} does not exist; train one with `datadiet igf -c CONFIG "
                            "--out FILE` or leave method.params.learner unset to train it during the run")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file: one message
        raise DataDietError(f"{str(path)!r} is not a readable IGF learner file ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise DataDietError(f"{str(path)!r} is not an IGF learner file (expected format {FORMAT!r}); "
                            "write one with `datadiet igf`")

    def foreign(problem: str) -> DataDietError:
        return DataDietError(f"{str(path)!r} is not a valid IGF learner file ({problem}); it was not written by "
                             "this datadiet or was changed since: write one with `datadiet igf`")

    arch, state, meta = blob.get("arch"), blob.get("state_dict"), blob.get("meta")
    fields = {f.name for f in LearnerArch.__dataclass_fields__.values()}
    required = {"vocab_size", "dim"}
    if not isinstance(arch, dict):
        raise foreign(f"'arch' is {type(arch).__name__}, expected a mapping of {', '.join(sorted(fields))}")
    if set(arch) - fields or required - set(arch):
        extra, missing = sorted(set(arch) - fields), sorted(required - set(arch))
        raise foreign("'arch' " + "; ".join(([f"has unknown keys {', '.join(map(str, extra))}"] if extra else [])
                                            + ([f"lacks {', '.join(missing)}"] if missing else [])))
    bad = [f"{k}={v!r}" for k, v in arch.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if bad:
        raise foreign(f"'arch' needs positive whole numbers, got {', '.join(bad)}")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise foreign("'state_dict' is not a mapping of names to tensors")
    if meta is not None and not isinstance(meta, dict):
        raise foreign(f"'meta' is {type(meta).__name__}, expected a mapping")
    try:
        q = SecondaryLearner(LearnerArch(**arch))
    except (RuntimeError, ValueError) as e:  # e.g. sizes too large to allocate
        raise foreign(f"cannot build its architecture {arch}: {str(e)[:200]}") from None
    want = {k: tuple(v.shape) for k, v in q.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    problems = ([f"missing {k}" for k in sorted(set(want) - set(got))]
                + [f"unexpected {k}" for k in sorted(set(got) - set(want))]
                + [f"{k} has shape {list(got[k])}, its 'arch' needs {list(want[k])}"
                   for k in sorted(set(want) & set(got)) if want[k] != got[k]])
    if problems:
        raise foreign("; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else ""))
    try:
        q.load_state_dict(state)
    except RuntimeError as e:  # shapes and names are checked above; anything else (dtype) still one message
        raise foreign(str(e).splitlines()[0][:200]) from None
    q.eval()
    return q, dict(meta or {})


# --------------------------------------------------------------------------- a linear learner on the LM's own view
RIDGE_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


@torch.no_grad()
def pool_hidden_states(model: nn.Module, tokens: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled last hidden state of the (frozen) LM for every context row of ``tokens`` [n, T] -> [n, d]."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    try:
        for s in range(0, len(tokens), batch_size):
            ids = torch.as_tensor(np.asarray(tokens[s : s + batch_size]), dtype=torch.long, device=dev)
            h = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
            out.append(h.float().mean(1).cpu().numpy())
    finally:
        model.train(was)
    return np.concatenate(out) if out else np.zeros((0, 0))


def fit_ridge(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
              alphas: tuple[float, ...] = RIDGE_ALPHAS) -> tuple[np.ndarray, float, float]:
    """Ridge regression on standardised features, the penalty picked by validation MSE; ``(w, b, alpha)``.

    ``x @ w + b`` predicts ``y`` (``w`` already folds the standardisation in). Without validation rows
    the middle penalty (10) is used. Pure numpy, closed form, deterministic.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    mu, sd = x.mean(0), x.std(0) + 1e-8
    z = (x - mu) / sd
    gram, rhs = z.T @ z, z.T @ (y - y.mean())
    eye = np.eye(z.shape[1])
    cands = [(a, np.linalg.solve(gram + a * eye, rhs)) for a in (alphas if len(y_val) else (10.0,))]
    if len(y_val):
        zv = (np.asarray(x_val, dtype=np.float64) - mu) / sd
        alpha, w = min(cands, key=lambda c: float(np.mean((zv @ c[1] + y.mean() - np.asarray(y_val)) ** 2)))
    else:
        alpha, w = cands[0]
    return w / sd, float(y.mean() - (mu / sd) @ w), float(alpha)
