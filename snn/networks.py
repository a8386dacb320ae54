"""Network factories, the shipped ones and yours: resolved, routed, built and checked by one probe.

A network factory is a plain callable ``(**params) -> nn.Module`` built from spikingjelly layers:
it takes a batch of images ``[N, C, H, W]`` (floats in [0, 1]), owns its time steps, and returns
``[N, classes]`` scores (the output layer's firing rates). The shipped ``fc`` and ``csnn`` are
``snn.models.fc_snn`` and ``snn.models.csnn``; any other is named ``package.module:function``
(importable from the current folder or PYTHONPATH) or, from Python, passed as the callable.

When the factory's signature takes ``input_shape`` (C, H, W) or ``classes``, they come from the
data, never from a config. Every other parameter of its signature is a network parameter
(``RunConfig.net``); a ``RunConfig`` field is the trainer's (``route`` splits a flat set of
values by that rule and refuses a name that neither takes).

``probe`` builds the network once on the CPU and runs one forward and backward pass of two images:
it checks what the factory returned (a module with spiking layers, scores of the right shape) and
measures what a training batch keeps for the backward pass (the memory check).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import re
import resource
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import TRAINER_FIELDS, ConfigError, ConfigTooLarge, RunConfig, format_bytes, is_reference
from .data import import_reference
from .errors import SnnTuneError

BUILTIN = {"fc": "snn.models:fc_snn", "csnn": "snn.models:csnn"}
DATA_ARGUMENTS = ("input_shape", "classes")  # what the data gives a factory that takes them
PROBE_IMAGES = 2  # images of the probe's forward and backward pass
BYTES_PER_WEIGHT = 16  # a float32 weight, its gradient and Adam's two moments


class NetworkError(SnnTuneError, ValueError):
    """A network factory that cannot be imported or called, or that builds something this tool cannot train."""


@dataclass(frozen=True)
class Network:
    """A resolved network factory: the name configs carry, the callable and what its signature takes."""

    name: str  # fc, csnn or package.module:function
    factory: Callable[..., nn.Module]
    parameters: tuple[str, ...]  # the network parameters it takes (not the data's)
    defaults: Mapping[str, Any]  # of those that have one
    takes_any: bool  # it has **kwargs
    data_arguments: tuple[str, ...]  # which of DATA_ARGUMENTS it takes

    def takes(self, name: str) -> bool:
        return name in self.parameters or (self.takes_any and name not in DATA_ARGUMENTS)

    def signature_text(self) -> str:
        return f"{self.name}({', '.join(self.parameters)}{', **kwargs' if self.takes_any else ''})"

    def defaults_for(self, net: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter's value in a network built from ``net``: its own, else the factory's default (for the
        shipped factories with the defaults they leave to spikingjelly filled in, e.g. surrogate_alpha)."""
        values = {**self.defaults, **net}
        effective = _EFFECTIVE.get(self.name)
        return effective(values) if effective is not None else values

    def describe(self, net: Mapping[str, Any], input_shape: tuple[int, ...] = (1, 28, 28), classes: int = 10) -> str:
        """The network in words: the shipped families' shapes ("784-800-10, LIF tau 2, T 25, poisson input"),
        else the factory's name and the parameters it is given."""
        describer = _DESCRIBERS.get(self.name)
        if describer is not None:
            from . import models

            return getattr(models, describer)(self.defaults_for(net), tuple(input_shape), classes)
        given = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(net.items()))
        return f"{self.name.rpartition(':')[2]}({given})"

    def check(self, net: Mapping[str, Any], complete: bool = True) -> None:
        """The parameters' names (and, for the shipped factories, their values) without building anything;
        ``complete``: every parameter without a default must be there."""
        for name in net:
            if not self.takes(name):
                raise ConfigError(name, f"is not a parameter of {self.signature_text()}", net[name])
        required = [p for p in self.parameters if p not in self.defaults and p not in net]
        if complete and required:
            raise ConfigError(required[0], f"{self.name} needs it (it has no default)", None)
        checker = _CHECKERS.get(self.name)
        if checker is not None:
            checker({**self.defaults, **net})

    def build(self, net: Mapping[str, Any], input_shape: tuple[int, ...], classes: int) -> nn.Module:
        """The factory's network for these parameters and data; NetworkError when it fails or is no module."""
        self.check(net)
        data = {"input_shape": tuple(input_shape), "classes": int(classes)}
        kwargs = {**{k: v for k, v in data.items() if k in self.data_arguments}, **net}
        try:
            module = self.factory(**kwargs)
        except ConfigError:
            raise
        except Exception as e:  # the user's code: any failure is one line
            if _out_of_memory(e):
                raise
            raise NetworkError(f"model {self.name}: the factory raised {type(e).__name__}: {_first_line(e)}") from None
        if not isinstance(module, nn.Module):
            raise NetworkError(
                f"model {self.name}: the factory returned a {type(module).__name__}, not a torch.nn.Module"
            )
        return module


def resolve(model: str | Callable[..., nn.Module]) -> Network:
    """The Network a config's ``model`` names (fc, csnn, package.module:function) or a callable is."""
    if callable(model) and not isinstance(model, str):
        return _describe(reference_of(model), model)
    return _resolved(model)


@functools.cache
def _resolved(name: str) -> Network:
    reference = BUILTIN.get(name, name)
    if not is_reference(reference):
        raise NetworkError(f"model {name!r}: must be one of {', '.join(BUILTIN)} or package.module:function")
    return _describe(name, import_reference(reference, "model", NetworkError))


def reference_of(factory: Callable) -> str:
    """``package.module:function`` of a callable (a factory defined in a notebook is ``__main__:name``; the
    name of a lambda or a nested function, which cannot be imported again, is spelled with identifiers only)."""
    for name in BUILTIN:
        if factory is _resolved(name).factory:
            return name
    module = getattr(factory, "__module__", None) or "__main__"
    qualname = getattr(factory, "__qualname__", None) or type(factory).__name__
    parts = [re.sub(r"\W", "_", part) or "_" for part in qualname.split(".")]
    parts = [f"_{part}" if part[0].isdigit() else part for part in parts]
    return f"{module}:{'.'.join(parts)}"


def _describe(name: str, factory: Callable) -> Network:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        raise NetworkError(
            f"model {name}: its signature cannot be read; a factory must be a Python function or class"
        ) from None
    parameters, defaults, takes_any, data = [], {}, False, []
    for p in signature.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            takes_any = True
        elif p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY):
            continue
        elif p.name in DATA_ARGUMENTS:
            data.append(p.name)
        else:
            parameters.append(p.name)
            if p.default is not p.empty:
                defaults[p.name] = p.default
    return Network(
        name=name,
        factory=factory,
        parameters=tuple(parameters),
        defaults=defaults,
        takes_any=takes_any,
        data_arguments=tuple(data),
    )


def _check_fc(values: dict[str, Any]) -> None:
    from .models import check_fc_args

    check_fc_args(**values)


def _check_csnn(values: dict[str, Any]) -> None:
    from .models import MNIST_SHAPE, check_csnn_args

    check_csnn_args(input_shape=MNIST_SHAPE, **values)


_CHECKERS = {"fc": _check_fc, "csnn": _check_csnn}


def _surrogate_alpha_filled(values: dict[str, Any]) -> dict[str, Any]:
    """fc_snn's and csnn's surrogate_alpha None is spikingjelly's default for the surrogate."""
    from .layers import DEFAULT_ALPHA

    if values.get("surrogate_alpha") is None and values.get("surrogate") in DEFAULT_ALPHA:
        return {**values, "surrogate_alpha": DEFAULT_ALPHA[values["surrogate"]]}
    return values


def _csnn_filled(values: dict[str, Any]) -> dict[str, Any]:
    """csnn's None defaults as built: channels_k is channels, fc_width 16 x the last block's channels."""
    values = _surrogate_alpha_filled(values)
    channels = {f"channels_{k}": values.get(f"channels_{k}") or values["channels"] for k in (1, 2, 3)}
    last = channels[f"channels_{min(int(values['blocks']), 3)}"] if isinstance(values.get("blocks"), int) else None
    fc_width = values.get("fc_width") or (16 * last if last else None)
    return {**values, **channels, "fc_width": fc_width}


_EFFECTIVE = {"fc": _surrogate_alpha_filled, "csnn": _csnn_filled}
_DESCRIBERS = {"fc": "describe_fc", "csnn": "describe_csnn"}


def route(values: Mapping[str, Any], network: Network, where: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """Split flat ``values`` into the trainer's (RunConfig fields) and the network's (the factory's parameters).

    A name both take goes to both. ConfigError names a value that neither takes, and what would.
    """
    trainer, net = {}, {}
    for name, value in values.items():
        if name in TRAINER_FIELDS:
            trainer[name] = value
        if network.takes(name):
            net[name] = value
        elif name in DATA_ARGUMENTS:
            raise ConfigError(
                f"{where}{name}", "comes from the data (the images' shape and the labels), not from a config", value
            )
        elif name not in TRAINER_FIELDS:
            raise ConfigError(
                f"{where}{name}",
                f"is neither a trainer setting (a RunConfig field: "
                f"python -m snn.train --help) nor a parameter of "
                f"{network.signature_text()}",
                value,
            )
    return trainer, net


def config_from_flat(
    model: str, values: Mapping[str, Any], network: Network | None = None, where: str = ""
) -> RunConfig:
    """A RunConfig from flat values (a search trial's, a space's fixed ones), routed by ``route``."""
    network = network or resolve(model)
    trainer, net = route(values, network, where)
    return RunConfig(model=model, net=net, **{k: v for k, v in trainer.items() if k != "net"})


def flat_values(config: RunConfig) -> dict[str, Any]:
    """The config as one flat mapping: the trainer's fields and the network's parameters side by side."""
    values = config.to_dict()
    net = values.pop("net")
    return {**values, **net}


def build_model(
    config: RunConfig, input_shape: tuple[int, ...] = (1, 28, 28), classes: int = 10, network: Network | None = None
) -> nn.Module:
    """The network a config describes, on the CPU, with its fast paths set by ``config.backend``."""
    from .models import set_backend

    network = network or resolve(config.model)
    return set_backend(network.build(config.net, input_shape, classes), config.backend)


# --- the probe --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """What one forward and backward pass of PROBE_IMAGES images showed of a network."""

    parameters: int  # trainable and other parameter values
    bytes_per_image: float  # kept for the backward pass per training image (and the output)
    output_layer: str
    steps: float  # time steps per forward (the output layer's)

    def training_bytes(self, batch_size: int) -> int:
        """Memory one training batch needs, roughly: what the batch keeps for the backward pass plus
        BYTES_PER_WEIGHT per parameter. It leaves out the dataset, the interpreter and the framework."""
        return int(batch_size * self.bytes_per_image + BYTES_PER_WEIGHT * self.parameters)


def probe(
    config: RunConfig,
    images: torch.Tensor,
    classes: int,
    network: Network | None = None,
    available_bytes: int | None = None,
    where: str = "this machine's memory",
) -> Probe:
    """Build ``config``'s network on the CPU and run one training forward and backward on ``images``.

    Raises NetworkError (one line) when the network is not something this tool can train: no
    spiking layer, an output that is not ``[N, classes]`` scores, an output layer that is not the
    last spiking layer to run (name it with ``output_layer``), no gradient to any weight.
    ConfigTooLarge when the probe itself does not fit in ``available_bytes``.
    """
    from .spikes import NoSpikingLayer, output_layer_name, record_activity

    network = network or resolve(config.model)
    with torch.random.fork_rng(devices=[]), _memory_capped(available_bytes) as capped:  # the caller's RNG untouched
        torch.manual_seed(config.seed)
        try:
            model = build_model(config.replace(device="cpu"), tuple(images.shape[1:]), classes, network)
            try:
                output = output_layer_name(model, config.output_layer)
            except NoSpikingLayer as e:
                raise NetworkError(f"model {network.name}: {e}; snn-tune trains spiking networks") from None
            except KeyError as e:
                raise NetworkError(str(e.args[0])) from None
            model.train()
            saved = _SavedBytes(model)
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
                with record_activity(model) as activity:
                    out = _call(model, images, network)
            _check_output(out, len(images), classes, network)
            _backward(out, network)
        except (RuntimeError, MemoryError) as e:
            if capped and _out_of_memory(e):
                shown = ", ".join(f"{k}={v}" for k, v in sorted(config.net.items()))
                raise ConfigTooLarge(
                    f"one training batch does not fit: {len(images)} images of it ({shown}) already "
                    f"need more than the {format_bytes(available_bytes)} of {where} "
                    f"({_first_line(e)}); lower T, the widths or the batch size"
                ) from None
            raise NetworkError(
                f"model {network.name}: running it raised {type(e).__name__}: {_first_line(e)}"
            ) from None
    if not any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()):
        raise NetworkError(
            f"model {network.name}: no weight got a gradient from the loss; a surrogate-gradient "
            f"network's spiking layers must be spikingjelly neurons between its weights"
        )
    ran = activity.order
    if config.output_layer is None and ran and ran[-1] != output:
        raise NetworkError(
            f"model {network.name}: its last spiking layer defined, {output}, is not the last to run "
            f"({ran[-1]}); set output_layer: {ran[-1]} (a trainer setting) to judge silence there"
        )
    bytes_per_image = (saved.bytes + out.numel() * out.element_size()) / len(images)
    return Probe(
        parameters=sum(p.numel() for p in model.parameters()),
        bytes_per_image=bytes_per_image,
        output_layer=output,
        steps=activity.steps,
    )


def training_images(config: RunConfig, available: int) -> int:
    """How many training images a run of ``config`` has, of ``available``: less its validation split and limit."""
    left = max(0, available - config.val_size)
    return left if config.limit_train is None else min(left, config.limit_train)


def check_batch(config: RunConfig, images: int) -> None:
    """ConfigError when a batch is larger than the ``images`` a run of ``config`` trains on."""
    if config.batch_size > images:
        raise ConfigError(
            "batch_size", f"must be at most the {images:,} training images the run has", config.batch_size
        )


def check_fits(config: RunConfig, found: Probe, available_bytes: int, where: str, images: int | None = None) -> None:
    """ConfigTooLarge when one training batch of ``config`` (``Probe.training_bytes``) exceeds ``available_bytes``;
    a batch holds ``config.batch_size`` images, or all ``images`` the run trains on when they are fewer."""
    need = found.training_bytes(config.batch_size if images is None else max(1, min(config.batch_size, images)))
    if need > available_bytes:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(config.net.items()))
        raise ConfigTooLarge(
            f"one training batch needs about {format_bytes(need)} (batch_size={config.batch_size}"
            f"{', ' + shown if shown else ''}), more than the {format_bytes(available_bytes)} of "
            f"{where}; lower the batch size, T or the network's widths"
        )


def _out_of_memory(error: BaseException) -> bool:
    """An allocation that failed: Python's MemoryError, torch's and numpy's "cannot allocate" errors."""
    return isinstance(error, MemoryError) or "alloc" in str(error).lower()


def _call(model: nn.Module, images: torch.Tensor, network: Network) -> torch.Tensor:
    try:
        return model(images)
    except Exception as e:
        if _out_of_memory(e):
            raise
        raise NetworkError(
            f"model {network.name}: its forward on a batch [N, C, H, W] = {list(images.shape)} raised "
            f"{type(e).__name__}: {_first_line(e)}"
        ) from None


def _check_output(out: Any, n: int, classes: int, network: Network) -> None:
    if not isinstance(out, torch.Tensor):
        raise NetworkError(
            f"model {network.name}: forward returned a {type(out).__name__}; it must return [N, classes] "
            f"scores (the output layer's firing rates)"
        )
    if tuple(out.shape) != (n, classes):
        raise NetworkError(
            f"model {network.name}: forward returned shape {list(out.shape)} for {n} images; it must "
            f"return [N, classes] = [{n}, {classes}] (the output layer's firing rates, averaged over T)"
        )
    if not out.is_floating_point() or not torch.isfinite(out).all():
        raise NetworkError(f"model {network.name}: forward returned non-finite or non-float scores")


def _backward(out: torch.Tensor, network: Network) -> None:
    if not out.requires_grad:
        raise NetworkError(f"model {network.name}: its output does not depend on any trainable weight")
    out.float().sum().backward()  # every score reaches the loss, also a silent output (rate 0)


class _SavedBytes:
    """Sums the bytes autograd keeps for the backward pass (each storage once; parameters not counted)."""

    def __init__(self, model: nn.Module):
        self.bytes = 0
        self._seen = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._seen:
            self._seen.add(storage.data_ptr())
            self.bytes += storage.nbytes()
        return tensor


@contextlib.contextmanager
def _memory_capped(available_bytes: int | None):
    """Lower the process's address-space limit to what it uses now plus ``available_bytes`` for the block, so
    that a probe too large for the machine fails to allocate (yields True) instead of swapping or being killed."""
    if available_bytes is None or not hasattr(resource, "RLIMIT_AS"):
        yield False
        return
    try:
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = used + int(available_bytes)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        if soft != resource.RLIM_INFINITY:
            cap = min(cap, soft)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (OSError, ValueError):
        yield False
        return
    try:
        yield True
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


def probe_images(data, n: int = PROBE_IMAGES) -> torch.Tensor:
    """The first ``n`` training images of a Dataset as float [n, C, H, W] on the CPU, for ``probe``."""
    return data.train.float_images(slice(0, n)).cpu()


__all__ = [
    "BUILTIN",
    "Network",
    "NetworkError",
    "Probe",
    "build_model",
    "check_batch",
    "check_fits",
    "config_from_flat",
    "flat_values",
    "probe",
    "probe_images",
    "reference_of",
    "resolve",
    "route",
]
