"""A run's live state and its checkpoints: written atomically, loaded weights-only.

``RunState`` is what ``snn.training.train`` hands to ``on_epoch``; ``RunState.save`` writes
everything needed to continue the run, and ``load_checkpoint`` restores it, so a resumed run
matches an unbroken one.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import RunConfig
from .errors import SnnTuneError
from .io import torch_save

EpochRecord = dict[str, Any]


# The lines of torch's weights-only error that are advice, not the reason
_TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation")


class CheckpointError(SnnTuneError, RuntimeError):
    """A checkpoint cannot be read or belongs to another configuration."""


@dataclass
class History:
    """What a run produced: one record per epoch and how it ended."""

    config: RunConfig
    epochs: list[EpochRecord] = field(default_factory=list)
    status: str = "running"  # running | completed | diverged | silent

    def best(self, metric: str = "test_acc") -> float:
        return max(r[metric] for r in self.epochs)

    def last(self, metric: str = "test_acc") -> float:
        return self.epochs[-1][metric]


@dataclass
class RunState:
    """The live objects of a run, handed to ``on_epoch`` so it can checkpoint them."""

    config: RunConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    shuffle_rng: torch.Generator
    history: History
    input_shape: tuple[int, ...] = (1, 28, 28)  # one image's (C, H, W): what the network was built for
    classes: int = 10

    def save(self, path: Path | str) -> None:
        save_checkpoint(path, self)


def save_checkpoint(path: Path | str, state: RunState) -> None:
    """Write model, optimizer, scheduler, RNG states, config and history to ``path`` atomically."""
    payload = {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": None if state.scheduler is None else state.scheduler.state_dict(),
        "epoch": len(state.history.epochs),
        "config": state.config.to_dict(),
        "data": {"input_shape": list(state.input_shape), "classes": state.classes},
        "history": state.history.epochs,
        "status": state.history.status,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "shuffle": state.shuffle_rng.get_state(),
        },
    }
    torch_save(payload, path)


def read_checkpoint(path: Path | str) -> dict:
    """The checkpoint's contents, loaded with ``weights_only=True``; CheckpointError if unreadable."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint there") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a checkpoint") from None
    except Exception as e:  # truncated, not a torch file, or holds code objects (refused, never run)
        found = re.search(r"GLOBAL (\S+)", str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if found:
            raise CheckpointError(f"{path}: refused: it refers to {found.group(1)}, more than tensors and plain data; "
                                  f"an snn-tune checkpoint never does, and loading it could run code") from None
        # torch's weights-only message is seven lines of advice around one line of reason
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = next((line for line in lines if not line.startswith(_TORCH_ADVICE)), lines[0] if lines else "")
        reason = reason or type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {reason[:200]})") from None
    missing = [key for key in ("model", "optimizer", "config", "history", "rng") if not isinstance(saved, dict)
               or key not in saved]
    if missing:
        raise CheckpointError(f"{path}: a torch file but not an snn-tune checkpoint (no {', '.join(missing)})")
    return saved


def load_checkpoint(path: Path | str, state: RunState) -> None:
    """Restore ``state`` in place from a checkpoint written for the same config (epochs may grow)."""
    saved = read_checkpoint(path)
    ours, theirs = state.config.to_dict(), dict(saved["config"])
    differing = sorted(k for k in ours if k != "epochs" and ours[k] != theirs.get(k))
    if differing:
        k = differing[0]
        raise CheckpointError(f"{path}: saved for {k}={theirs.get(k)!r}, this run has {k}={ours[k]!r}")
    try:
        state.model.load_state_dict(saved["model"])
        state.optimizer.load_state_dict(saved["optimizer"])
        if state.scheduler is not None and saved["scheduler"] is not None:
            state.scheduler.load_state_dict(saved["scheduler"])
    except (RuntimeError, ValueError, KeyError) as e:  # weights of another shape, a foreign optimizer state
        reason = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: its weights do not fit this model ({reason[:200]})") from None
    state.history.epochs[:] = saved["history"]
    state.history.status = saved.get("status", "running")
    if state.history.status == "completed" and len(saved["history"]) < state.config.epochs:
        state.history.status = "running"  # more epochs were asked for
    torch.set_rng_state(saved["rng"]["torch"])
    if saved["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    state.shuffle_rng.set_state(saved["rng"]["shuffle"])
