"""One run's configuration: a frozen dataclass, validated when built.

Every hyperparameter the search may tune is a field here. Fields left as ``None``
take the seed report's default for the chosen model (``SEED_DEFAULTS``), so
``RunConfig(model="csnn")`` is the seed's CSNN and ``RunConfig(model="fc")`` its FC-SNN.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

MODELS = ("fc", "csnn")
DATASETS = ("mnist", "fashion-mnist")
OPTIMIZERS = ("sgd", "adam", "adamw")
NEURONS = ("lif", "if", "plif")
SURROGATES = ("atan", "sigmoid")
SURROGATE_DEFAULT_ALPHA = {"atan": 2.0, "sigmoid": 4.0}  # spikingjelly's ATan() and Sigmoid() defaults
LR_SCHEDULES = ("none", "cosine")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "torch", "triton", "cuda")  # snn.fastpath.BACKENDS
TRAIN_IMAGES = 60_000  # MNIST's and Fashion-MNIST's training split
MAX_SEED = 2**32 - 1  # the largest seed every generator a run or a search seeds accepts (numpy's)

# The seed report's settings, per model (see README "The seed report").
SEED_DEFAULTS: dict[str, dict[str, Any]] = {
    "fc": dict(T=100, tau=2.0, neuron="lif", optimizer="adam", lr=1e-3, momentum=0.0, epochs=100),
    "csnn": dict(T=4, tau=2.0, neuron="if", optimizer="sgd", lr=0.1, momentum=0.9, epochs=64),
}


class ConfigTooLarge(ValueError):
    """One training batch of a config would not fit in the memory of the device that runs it."""


class ConfigError(ValueError):
    """A config value breaks a rule; the message names the field, the rule and the value."""

    def __init__(self, field_name: str, rule: str, value: Any):
        self.field_name, self.rule, self.value = field_name, rule, value
        super().__init__(f"{field_name}: {rule}, got {value!r}")


def _doc(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what one training run computes."""

    model: str = field(default="fc", metadata=_doc("network: fc (FC-SNN) or csnn", choices=MODELS))
    dataset: str = field(default="mnist", metadata=_doc("mnist or fashion-mnist", choices=DATASETS))
    T: int | None = field(default=None, metadata=_doc("simulation length, in time steps (seed: fc 100, csnn 4)"))
    tau: float | None = field(
        default=None, metadata=_doc("membrane time constant of LIF/PLIF neurons, in time steps, > 1 (seed 2.0)")
    )
    neuron: str | None = field(
        default=None, metadata=_doc("spiking neuron: lif, if or plif (seed: fc lif, csnn if)", choices=NEURONS)
    )
    surrogate: str = field(default="atan", metadata=_doc("surrogate gradient of the spike (seed atan)", choices=SURROGATES))
    surrogate_alpha: float | None = field(
        default=None, metadata=_doc("surrogate sharpness alpha (default: spikingjelly's, atan 2.0, sigmoid 4.0)")
    )
    channels: int = field(default=64, metadata=_doc("CSNN conv channels C (seed 64); unused by fc"))
    optimizer: str | None = field(
        default=None, metadata=_doc("sgd, adam or adamw (seed: fc adam, csnn sgd)", choices=OPTIMIZERS)
    )
    lr: float | None = field(default=None, metadata=_doc("learning rate (seed: fc 1e-3, csnn 0.1)"))
    momentum: float | None = field(default=None, metadata=_doc("SGD momentum, in [0, 1) (seed: csnn 0.9)"))
    weight_decay: float = field(default=0.0, metadata=_doc("L2 weight decay (seed 0)"))
    lr_schedule: str = field(default="none", metadata=_doc("none or cosine annealing over the epochs", choices=LR_SCHEDULES))
    batch_size: int = field(default=128, metadata=_doc("images per training batch (seed 128)"))
    epochs: int | None = field(default=None, metadata=_doc("training epochs (seed: fc 100, csnn 64)"))
    seed: int = field(default=0, metadata=_doc("seed of weights, shuffling and Poisson spikes"))
    val_size: int = field(default=0, metadata=_doc("images held out of the 60,000 training images for validation"))
    limit_train: int | None = field(default=None, metadata=_doc("use only the first N training images"))
    limit_test: int | None = field(default=None, metadata=_doc("use only the first N test images"))
    device: str = field(default="auto", metadata=_doc("auto (cuda when present), cpu or cuda", choices=DEVICES))
    amp: bool = field(default=False, metadata=_doc("bfloat16 autocast on CUDA (ignored on CPU, which stays fp32)"))
    backend: str = field(default="auto", metadata=_doc(
        "neuron implementation: auto (fused CPU kernels on CPU, spikingjelly's fastest CUDA kernels on GPU), "
        "torch (spikingjelly's Torch reference and dense Poisson input everywhere), triton or cuda (that "
        "spikingjelly CUDA provider; needs a GPU)", choices=BACKENDS))

    def __post_init__(self) -> None:
        _check_choice("model", self.model, MODELS)
        for name, value in SEED_DEFAULTS[self.model].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        _validate(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build a config from a plain dict (JSON, a search trial), rejecting unknown keys."""
        unknown = sorted(set(values) - set(field_names()))
        if unknown:
            raise ConfigError(unknown[0], "is not a config field", values[unknown[0]])
        return cls(**values)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(RunConfig))


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(name, f"must be one of {', '.join(choices)}", value)


def _check_number(name: str, value: Any, kind: type) -> None:
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise ConfigError(name, f"must be {'an integer' if kind is int else 'a number'}", value)
    if kind is float and not math.isfinite(value):  # inf passes "> 0" and NaN fails every "<= 0" check
        raise ConfigError(name, "must be a finite number", value)


def _validate(c: RunConfig) -> None:
    for name, choices in (
        ("dataset", DATASETS),
        ("neuron", NEURONS),
        ("surrogate", SURROGATES),
        ("optimizer", OPTIMIZERS),
        ("lr_schedule", LR_SCHEDULES),
        ("device", DEVICES),
        ("backend", BACKENDS),
    ):
        _check_choice(name, getattr(c, name), choices)
    for name in ("T", "channels", "batch_size", "epochs", "seed", "val_size"):
        _check_number(name, getattr(c, name), int)
    for name in ("tau", "lr", "momentum", "weight_decay"):
        _check_number(name, getattr(c, name), float)
    rules = [
        ("T", c.T >= 1, "must be >= 1 time step"),
        ("tau", c.tau > 1.0, "must be > 1 (spikingjelly's LIF rule)"),
        ("lr", c.lr > 0, "must be > 0"),
        ("momentum", 0 <= c.momentum < 1, "must be in [0, 1)"),
        ("weight_decay", c.weight_decay >= 0, "must be >= 0"),
        ("channels", c.channels >= 1, "must be >= 1"),
        ("batch_size", 1 <= c.batch_size <= TRAIN_IMAGES,
         f"must be in [1, {TRAIN_IMAGES}] (a batch holds at most the {TRAIN_IMAGES:,} training images)"),
        ("seed", 0 <= c.seed <= MAX_SEED, "must be in [0, 2**32 - 1]"),
        ("epochs", c.epochs >= 1, "must be >= 1"),
        ("val_size", 0 <= c.val_size < TRAIN_IMAGES, f"must be in [0, {TRAIN_IMAGES})"),
    ]
    for name, holds, rule in rules:
        if not holds:
            raise ConfigError(name, rule, getattr(c, name))
    if c.surrogate_alpha is not None:
        _check_number("surrogate_alpha", c.surrogate_alpha, float)
        if c.surrogate_alpha <= 0:
            raise ConfigError("surrogate_alpha", "must be > 0", c.surrogate_alpha)
    for name in ("limit_train", "limit_test"):
        value = getattr(c, name)
        if value is not None:
            _check_number(name, value, int)
            if value < 1:
                raise ConfigError(name, "must be >= 1 image (or unset)", value)
    if not isinstance(c.amp, bool):
        raise ConfigError("amp", "must be true or false", c.amp)
    if c.backend in ("triton", "cuda") and c.device == "cpu":
        raise ConfigError("backend", "triton and cuda need device cuda (or auto on a GPU machine)", c.backend)


# What ``training_memory_bytes`` counts: float32 values kept per neuron and time step for the
# backward pass (input current, membrane potential, spike, surrogate input: 4 x 4 bytes), per
# input spike and step (one float32), and per weight (the weight, its gradient, Adam's two
# moments: 4 x 4 bytes).
BYTES_PER_NEURON_STEP = 16
BYTES_PER_INPUT_STEP = 4
BYTES_PER_WEIGHT = 16


def training_memory_bytes(config: RunConfig) -> int:
    """A rough estimate of the memory one training batch of ``config`` needs, in bytes.

    T x batch x (BYTES_PER_INPUT_STEP x input spikes + BYTES_PER_NEURON_STEP x units) +
    BYTES_PER_WEIGHT x weights, with batch = min(batch_size, training images). Per image and
    step, the FC-SNN has 784 Poisson input spikes (dense, as on a GPU; its CPU path holds fewer)
    and 10 neurons; the CSNN no input spikes (its first convolution runs once on the image) and
    C x 28 x 28 + 2 x C x 14 x 14 + C x 7 x 7 + 16 x C + 10 units (spiking layers and pooling).
    The seed's CSNN comes to 0.7 GB and its FC-SNN to 42 MB (README "Performance" measured
    1.0 GB and 47 MB on a CPU). It leaves out the dataset, the interpreter and the framework (about 1 GB
    on a CPU): it is meant to catch configurations that cannot fit, not to plan memory.
    """
    available = TRAIN_IMAGES - config.val_size
    images = min(config.batch_size, available if config.limit_train is None else min(config.limit_train, available))
    if config.model == "fc":
        inputs, units, weights = 28 * 28, 10, 28 * 28 * 10
    else:
        C = config.channels
        inputs, units = 0, C * 28 * 28 + 2 * C * 14 * 14 + C * 7 * 7 + 16 * C + 10
        weights = 9 * C + 4 * C + 9 * C * C + (C * 7 * 7) * (C * 16) + C * 16 * 10  # conv, BN x2, conv, fc1, fc2
    per_step = BYTES_PER_INPUT_STEP * inputs + BYTES_PER_NEURON_STEP * units
    return config.T * images * per_step + BYTES_PER_WEIGHT * weights


def check_fits(config: RunConfig, available_bytes: int, where: str) -> None:
    """Refuse a config whose estimated training batch (``training_memory_bytes``) exceeds ``available_bytes``."""
    need = training_memory_bytes(config)
    if need > available_bytes:
        raise ConfigTooLarge(f"one training batch needs about {format_bytes(need)} (T={config.T}, batch_size="
                             f"{config.batch_size}{f', channels={config.channels}' if config.model == 'csnn' else ''}), "
                             f"more than the {format_bytes(available_bytes)} of {where}; lower T, batch_size or channels")


def format_bytes(n: float) -> str:
    """A byte count in SI units with 3 significant figures: 650 MB, 1.63 PB."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    i = 0
    while n >= 999.5 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{n:.3g} {units[i]}"
