"""Checkpoints: everything needed to continue a run, written atomically, loaded weights-only."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .io import torch_save

if TYPE_CHECKING:
    from .training import RunState


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or belongs to another configuration."""


def save_checkpoint(path: Path | str, state: RunState) -> None:
    """Write model, optimizer, scheduler, RNG states, config and history to ``path`` atomically."""
    payload = {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": None if state.scheduler is None else state.scheduler.state_dict(),
        "epoch": len(state.history.epochs),
        "config": state.config.to_dict(),
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
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint there") from None
    except Exception as e:  # truncated, not a torch file, or holds code objects
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None


def load_checkpoint(path: Path | str, state: RunState) -> None:
    """Restore ``state`` in place from a checkpoint written for the same config (epochs may grow)."""
    saved = read_checkpoint(path)
    ours, theirs = state.config.to_dict(), dict(saved["config"])
    differing = sorted(k for k in ours if k != "epochs" and ours[k] != theirs.get(k))
    if differing:
        k = differing[0]
        raise CheckpointError(f"{path}: saved for {k}={theirs.get(k)!r}, this run has {k}={ours[k]!r}")
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    if state.scheduler is not None and saved["scheduler"] is not None:
        state.scheduler.load_state_dict(saved["scheduler"])
    state.history.epochs[:] = saved["history"]
    state.history.status = saved.get("status", "running")
    if state.history.status == "completed" and len(saved["history"]) < state.config.epochs:
        state.history.status = "running"  # more epochs were asked for
    torch.set_rng_state(saved["rng"]["torch"])
    if saved["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    state.shuffle_rng.set_state(saved["rng"]["shuffle"])
