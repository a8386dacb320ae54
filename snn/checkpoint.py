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
            raise CheckpointError(
                f"{path}: refused: it refers to {found.group(1)}, more than tensors and plain data; "
                f"an snn-tune checkpoint never does, and loading it could run code"
            ) from None
        # torch's weights-only message is seven lines of advice around one line of reason
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = next((line for line in lines if not line.startswith(_TORCH_ADVICE)), lines[0] if lines else "")
        reason = reason or type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {reason[:200]})") from None
    missing = [
        key
        for key in ("model", "optimizer", "config", "history", "rng")
        if not isinstance(saved, dict) or key not in saved
    ]
    if missing:
        raise CheckpointError(f"{path}: a torch file but not an snn-tune checkpoint (no {', '.join(missing)})")
    problem = _malformed(saved)
    if problem:
        raise CheckpointError(f"{path}: not an snn-tune checkpoint: {problem}")
    return saved


STATUSES = ("running", "completed", "diverged", "silent")  # History.status


def _malformed(saved: dict) -> str | None:
    """What in a weights-only checkpoint does not have the layout ``save_checkpoint`` writes, or None."""
    for key in ("model", "optimizer", "config"):
        if not isinstance(saved[key], dict):
            return f"its {key} is {_kind(saved[key])}, not a mapping"
    if saved.get("scheduler") is not None and not isinstance(saved["scheduler"], dict):
        return f"its scheduler is {_kind(saved['scheduler'])}, not a mapping or None"
    history = saved["history"]
    if not isinstance(history, list):
        return f"its history is {_kind(history)}, not a list of epoch records"
    for i, record in enumerate(history):
        if not isinstance(record, dict) or not all(isinstance(k, str) for k in record):
            return f"its history's record {i} is {_kind(record)}, not a mapping of names to values"
        odd = next((k for k, v in record.items() if not isinstance(v, (int, float, str, type(None)))), None)
        if odd is not None:
            return f"its history's record {i} holds {odd} {_kind(record[odd])}, not a number, text or None"
    if saved.get("status", "running") not in STATUSES:
        return f"its status is {saved.get('status')!r}, not one of {', '.join(STATUSES)}"
    if "epoch" in saved and saved["epoch"] != len(history):
        return f"its epoch is {saved['epoch']!r} but its history holds {len(history)} epochs"
    data = saved.get("data", {"input_shape": [1, 28, 28], "classes": 10})  # older checkpoints: MNIST's
    if not (
        isinstance(data, dict)
        and isinstance(data.get("input_shape"), list)
        and data["input_shape"]
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in data["input_shape"])
        and isinstance(data.get("classes"), int)
        and not isinstance(data["classes"], bool)
        and data["classes"] >= 1
    ):
        return f"its data is {_kind(data)}, not the image shape (a list of sizes) and the number of classes"
    return _malformed_rng(saved["rng"])


def _malformed_rng(rng: Any) -> str | None:
    if not isinstance(rng, dict):
        return f"its rng is {_kind(rng)}, not a mapping of generator states"
    size = torch.get_rng_state().numel()  # a CPU generator's state; the shuffle generator is one too
    for key in ("torch", "shuffle"):
        state = rng.get(key)
        if not (isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.shape == (size,)):
            return f"its rng's {key} state is {_kind(state)}, not {size} bytes (a torch.ByteTensor)"
    cuda = rng.get("cuda", [])
    if not (
        isinstance(cuda, list)
        and all(isinstance(s, torch.Tensor) and s.dtype == torch.uint8 and s.dim() == 1 for s in cuda)
    ):
        return f"its rng's cuda states are {_kind(cuda)}, not a list of torch.ByteTensors"
    return None


def _kind(value: Any) -> str:
    """A value's type for a message, with the tensor's dtype and shape."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of {value.dtype}, shape {tuple(value.shape)}"
    return f"of type {type(value).__name__}"


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
    if saved["rng"].get("cuda") and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        except RuntimeError as e:  # a state of another CUDA generator's layout
            raise CheckpointError(
                f"{path}: its CUDA generator states do not fit this machine ({str(e).strip().splitlines()[0][:200]})"
            ) from None
    state.shuffle_rng.set_state(saved["rng"]["shuffle"])
