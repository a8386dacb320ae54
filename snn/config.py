"""One run's configuration: a frozen dataclass, validated when built.

A run is a network, the data it learns and how the trainer trains it. ``model`` names the
network factory (``fc``, ``csnn``, or a ``package.module:function`` of your own) and ``net``
holds the factory's keyword arguments (the shipped factories' T, tau, neuron, widths, ...);
every other field is the trainer's. Fields left as ``None`` take the seed report's default for
a shipped model (``SEED_DEFAULTS``) and ``GENERIC_DEFAULTS`` for any other network, so
``RunConfig(model="csnn")`` is the seed's CSNN and ``RunConfig(model="fc")`` its FC-SNN
(the factories' own defaults are the seed's network).

This module imports neither torch nor the factories: ``net`` is checked against the factory
when the network is built (``snn.networks``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import SnnTuneError

MODELS = ("fc", "csnn")  # the shipped network factories (snn.models); any package.module:function too
DATASETS = ("mnist", "fashion-mnist", "kmnist", "cifar10")  # torchvision's; any package.module:function too
OPTIMIZERS = ("sgd", "adam", "adamw")
LOSSES = ("mse", "ce")
LR_SCHEDULES = ("none", "cosine")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "torch", "triton", "cuda")  # snn.fastpath.BACKENDS
MAX_SEED = 2**32 - 1  # the largest seed every generator a run or a search seeds accepts (numpy's)
# "package.module:function": a factory importable from the current folder or PYTHONPATH
REFERENCE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")

# The seed report's trainer settings, per shipped model (its networks are the factories' defaults:
# snn.models.fc_snn and snn.models.csnn).
SEED_DEFAULTS: dict[str, dict[str, Any]] = {
    "fc": dict(optimizer="adam", lr=1e-3, momentum=0.0, epochs=100),
    "csnn": dict(optimizer="sgd", lr=0.1, momentum=0.9, epochs=64),
}
# The trainer's defaults for a network of your own.
GENERIC_DEFAULTS: dict[str, Any] = dict(optimizer="adam", lr=1e-3, momentum=0.0, epochs=10)


class ConfigTooLarge(SnnTuneError, ValueError):
    """One training batch of a config would not fit in the memory of the device that runs it."""


class ConfigError(SnnTuneError, ValueError):
    """A config value breaks a rule; the message names the field, the rule and the value."""

    def __init__(self, field_name: str, rule: str, value: Any):
        self.field_name, self.rule, self.value = field_name, rule, value
        super().__init__(f"{field_name}: {rule}, got {value!r}")


def _doc(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


def is_reference(name: Any) -> bool:
    """Whether ``name`` is a ``package.module:function`` reference."""
    return isinstance(name, str) and bool(REFERENCE.match(name))


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what one training run computes."""

    model: str = field(
        default="fc",
        metadata=_doc(
            "network: fc (FC-SNN), csnn, or package.module:function, a factory of your own that returns a "
            "spikingjelly network"
        ),
    )
    net: Mapping[str, Any] = field(
        default_factory=dict,
        metadata=_doc(
            "the network factory's keyword arguments (fc and csnn: T, tau, neuron, hidden_layers, blocks, ...); "
            "empty: the factory's defaults, which for fc and csnn are the seed's networks"
        ),
    )
    dataset: str = field(
        default="mnist",
        metadata=_doc(
            "mnist, fashion-mnist, kmnist, cifar10 (torchvision's), or package.module:function returning tensors"
        ),
    )
    scale_data: bool = field(
        default=False,
        metadata=_doc("min-max scale a dataset factory's float images into [0, 1] (else they must lie there)"),
    )
    loss: str = field(
        default="mse",
        metadata=_doc(
            "mse: MSE between the output rates and one-hot labels (the seed's); ce: cross-entropy on the rates",
            choices=LOSSES,
        ),
    )
    optimizer: str | None = field(
        default=None, metadata=_doc("sgd, adam or adamw (seed: fc adam, csnn sgd)", choices=OPTIMIZERS)
    )
    lr: float | None = field(default=None, metadata=_doc("learning rate (seed: fc 1e-3, csnn 0.1)"))
    momentum: float | None = field(default=None, metadata=_doc("SGD momentum, in [0, 1) (seed: csnn 0.9)"))
    weight_decay: float = field(default=0.0, metadata=_doc("L2 weight decay (seed 0)"))
    lr_schedule: str = field(
        default="none", metadata=_doc("none or cosine annealing over the epochs", choices=LR_SCHEDULES)
    )
    augment_shift: int = field(
        default=0,
        metadata=_doc(
            "shift each training image by a random whole number of pixels, up to N in each direction, zero-filled "
            "(seed 0: none); validation and test images are never shifted"
        ),
    )
    batch_size: int = field(default=128, metadata=_doc("images per training batch (seed 128)"))
    epochs: int | None = field(default=None, metadata=_doc("training epochs (seed: fc 100, csnn 64)"))
    seed: int = field(default=0, metadata=_doc("seed of weights, shuffling and Poisson spikes"))
    val_size: int = field(default=0, metadata=_doc("training images held out for validation"))
    limit_train: int | None = field(default=None, metadata=_doc("use only the first N training images"))
    limit_test: int | None = field(default=None, metadata=_doc("use only the first N test images"))
    output_layer: str | None = field(
        default=None,
        metadata=_doc(
            "the spiking layer the silence rule judges (a module name); default: the last spiking layer to run"
        ),
    )
    device: str = field(default="auto", metadata=_doc("auto (cuda when present), cpu or cuda", choices=DEVICES))
    amp: bool = field(default=False, metadata=_doc("bfloat16 autocast on CUDA (ignored on CPU, which stays fp32)"))
    backend: str = field(
        default="auto",
        metadata=_doc(
            "neuron implementation: auto (fused CPU kernels on CPU, spikingjelly's fastest CUDA kernels on GPU), "
            "torch (spikingjelly's Torch reference and dense Poisson input everywhere), triton or cuda (that "
            "spikingjelly CUDA provider; needs a GPU)",
            choices=BACKENDS,
        ),
    )

    def __post_init__(self) -> None:
        if not (self.model in MODELS or is_reference(self.model)):
            raise ConfigError("model", f"must be one of {', '.join(MODELS)} or package.module:function", self.model)
        for name, value in trainer_defaults(self.model).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        object.__setattr__(self, "net", _checked_net(self.net))
        _validate(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunConfig:
        """Build a config from a plain dict (JSON, a search trial), rejecting unknown keys."""
        unknown = sorted(set(values) - set(field_names()))
        if unknown:
            raise ConfigError(unknown[0], "is not a config field", values[unknown[0]])
        return cls(**values)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def with_net(self, **params: Any) -> RunConfig:
        """This config with some of the factory's arguments set (the others kept)."""
        return self.replace(net={**self.net, **params})

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["net"] = dict(self.net)
        return values


def trainer_defaults(model: str) -> dict[str, Any]:
    """The trainer's defaults for a model: the seed report's for fc and csnn, GENERIC_DEFAULTS otherwise."""
    return SEED_DEFAULTS.get(model, GENERIC_DEFAULTS)


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(RunConfig))


TRAINER_FIELDS = tuple(name for name in field_names() if name not in ("model", "net"))


def _checked_net(net: Any) -> dict[str, Any]:
    """``net`` as a plain dict of JSON values keyed by parameter names."""
    if not isinstance(net, Mapping):
        raise ConfigError("net", "must be a mapping of the network factory's arguments", net)
    for name, value in net.items():
        if not (isinstance(name, str) and name.isidentifier()):
            raise ConfigError("net", "keys must be parameter names", name)
        if not _is_json_value(value):
            raise ConfigError(name, "must be a number, text, true/false, null or a list of them", value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(name, "must be a finite number", value)
    return dict(net)


def _is_json_value(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (list, tuple)) and all(_is_json_value(v) for v in value)


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
    if not (c.dataset in DATASETS or is_reference(c.dataset)):
        raise ConfigError("dataset", f"must be one of {', '.join(DATASETS)} or package.module:function", c.dataset)
    for name, choices in (
        ("loss", LOSSES),
        ("optimizer", OPTIMIZERS),
        ("lr_schedule", LR_SCHEDULES),
        ("device", DEVICES),
        ("backend", BACKENDS),
    ):
        _check_choice(name, getattr(c, name), choices)
    for name in ("augment_shift", "batch_size", "epochs", "seed", "val_size"):
        _check_number(name, getattr(c, name), int)
    for name in ("lr", "momentum", "weight_decay"):
        _check_number(name, getattr(c, name), float)
    rules = [
        ("lr", c.lr > 0, "must be > 0"),
        ("momentum", 0 <= c.momentum < 1, "must be in [0, 1)"),
        ("weight_decay", c.weight_decay >= 0, "must be >= 0"),
        ("augment_shift", c.augment_shift >= 0, "must be >= 0"),
        ("batch_size", c.batch_size >= 1, "must be >= 1"),
        ("seed", 0 <= c.seed <= MAX_SEED, "must be in [0, 2**32 - 1]"),
        ("epochs", c.epochs >= 1, "must be >= 1"),
        ("val_size", c.val_size >= 0, "must be >= 0"),
    ]
    for name, holds, rule in rules:
        if not holds:
            raise ConfigError(name, rule, getattr(c, name))
    for name in ("limit_train", "limit_test"):
        value = getattr(c, name)
        if value is not None:
            _check_number(name, value, int)
            if value < 1:
                raise ConfigError(name, "must be >= 1 image (or unset)", value)
    for name in ("amp", "scale_data"):
        if not isinstance(getattr(c, name), bool):
            raise ConfigError(name, "must be true or false", getattr(c, name))
    if c.output_layer is not None and not (isinstance(c.output_layer, str) and c.output_layer):
        raise ConfigError("output_layer", "must be a module name (or unset)", c.output_layer)
    if c.backend in ("triton", "cuda") and c.device == "cpu":
        raise ConfigError("backend", "triton and cuda need device cuda (or auto on a GPU machine)", c.backend)


def format_bytes(n: float) -> str:
    """A byte count in SI units with 3 significant figures: 650 MB, 1.63 PB."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    i = 0
    while n >= 999.5 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{n:.3g} {units[i]}"
