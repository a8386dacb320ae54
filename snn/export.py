"""A trained network out of the tool: loaded for inference in one call, and written as NIR for other tools.

``load_run(folder)`` rebuilds the network a run folder holds (``config.json``'s factory,
``checkpoint.pt``'s weights, loaded weights-only) in evaluation mode. ``to_nir(model, input_shape)``
gives its NIR graph (the Neuromorphic Intermediate Representation, https://neuroir.org, read by
Lava, Norse, snnTorch, Rockpool, SpiNNaker2, Xylo, ...); ``read_nir(path)`` runs a NIR file as a
torch module, step by step, for checking.

The shipped families are exported as a chain of NIR nodes: Linear (and Conv2d with its batch norm
folded in, as at inference), IF or LIF neurons (PLIF at its learnt tau), Flatten, and each 2x2
max-pool of spikes as SumPool2d followed by Threshold(0.5) (for 0/1 spikes the maximum of a window
is whether its sum reaches 1). The graph's input is what the first layer receives at each step:
the Poisson spikes of the pixels (``encoding: poisson``: draw them as ``snn.layers.poisson_encode``
does) or the image itself (direct input, and the CSNN). Dropout is the identity at inference.
Time constants follow spikingjelly's convention: dt = 1e-4 s per step, tau in steps x dt.
Any other network goes through spikingjelly's own ``export_to_nir``; a layer NIR cannot express
is refused with one line naming it (``NotExpressible``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from spikingjelly.activation_based import layer, neuron
from spikingjelly.activation_based.neuron.base_node import BaseNode
from torch import nn

from .checkpoint import read_checkpoint
from .config import RunConfig
from .errors import SnnTuneError
from .models import CSNN, FCSNN
from .networks import build_model
from .run_folder import RunFolder

DT = 1e-4  # seconds per time step in the NIR graph (spikingjelly's and most NIR tools' default)
POOL_THRESHOLD = 0.5  # a window of 0/1 spikes holds a spike when its sum passes this


class NotExpressible(SnnTuneError, ValueError):
    """A layer of the network that NIR cannot express; the message names it."""


def load_run(folder: Path | str) -> tuple[nn.Module, RunConfig]:
    """The trained network of a run folder (``python -m snn.train --out``, a retrain seed), ready for inference.

    Returns (model in eval mode on the CPU, its RunConfig). CheckpointError (one line) when the
    folder holds no readable checkpoint; its factory is imported by the name config.json gives.
    """
    run = RunFolder(Path(folder))
    saved = read_checkpoint(run.checkpoint)
    config = RunConfig.from_dict(saved["config"])
    data = saved.get("data") or {"input_shape": [1, 28, 28], "classes": 10}
    model = build_model(config.replace(device="cpu"), tuple(data["input_shape"]), int(data["classes"]))
    model.load_state_dict(saved["model"])
    return model.eval(), config


def input_shape_of(folder: Path | str) -> tuple[int, ...]:
    """The image shape (C, H, W) the run folder's network was trained on."""
    saved = read_checkpoint(RunFolder(Path(folder)).checkpoint)
    return tuple((saved.get("data") or {"input_shape": [1, 28, 28]})["input_shape"])


# --- to NIR -----------------------------------------------------------------------------------------


def to_nir(model: nn.Module, input_shape: tuple[int, ...], module: str | None = None):
    """The model's NIR graph (a ``nir.NIRGraph``) for images of ``input_shape`` (C, H, W).

    ``module``: export this submodule instead (a network of yours whose ``forward`` encodes the input or
    loops over time itself: name the layers it runs, e.g. an ``nn.Sequential`` of spikingjelly layers).
    """
    import nir

    if module is not None:
        try:
            model = model.get_submodule(module)
        except AttributeError:
            raise NotExpressible(f"{type(model).__name__} has no submodule {module!r}") from None
        return _spikingjelly_export(model, input_shape)
    if isinstance(model, FCSNN):
        return _chain(nir, _fc_nodes(nir, model), (math.prod(input_shape),), (model.fc.out_features,))
    if isinstance(model, CSNN):
        return _chain(nir, _csnn_nodes(nir, model, input_shape), tuple(input_shape), (model.fc2.out_features,))
    return _spikingjelly_export(model, input_shape)


def write_nir(model: nn.Module, input_shape: tuple[int, ...], path: Path | str, module: str | None = None) -> Path:
    """Write the model's (or its submodule's) NIR graph to ``path`` (HDF5, ``nir.write``); returns the path."""
    import nir

    graph = to_nir(model, input_shape, module)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nir.write(str(path), graph)
    return path


def _chain(nir, nodes: list[tuple[str, Any]], input_shape: tuple[int, ...], output_shape: tuple[int, ...]):
    """A NIRGraph of ``nodes`` one after another, from an Input of ``input_shape`` to an Output."""
    named = {
        "input": nir.Input(input_type={"input": np.array(input_shape)}),
        **dict(nodes),
        "output": nir.Output(output_type={"output": np.array(output_shape)}),
    }
    names = ["input", *(name for name, _ in nodes), "output"]
    return nir.NIRGraph(nodes=named, edges=list(zip(names, names[1:])))


def _neuron_node(nir, module: BaseNode, name: str, shape: tuple[int, ...]):
    """spikingjelly's IF, LIF or PLIF neuron as a NIR node (hard reset to v_reset, as spikingjelly's export)."""
    if module.v_reset is None:
        raise NotExpressible(f"layer {name} ({type(module).__name__}): NIR has no soft reset")
    threshold, reset = np.full(shape, float(module.v_threshold)), np.full(shape, float(module.v_reset))
    if isinstance(module, neuron.IFNode):
        return nir.IF(r=np.full(shape, 1.0 / DT), v_threshold=threshold, v_reset=reset)
    if isinstance(module, neuron.ParametricLIFNode):
        tau = 1.0 / float(module.w.detach().sigmoid())
    elif isinstance(module, neuron.LIFNode):
        tau = float(module.tau)
    else:
        raise NotExpressible(f"layer {name} ({type(module).__name__}): not an IF, LIF or PLIF neuron")
    if not getattr(module, "decay_input", True):
        raise NotExpressible(f"layer {name} ({type(module).__name__}): NIR's LIF decays its input")
    return nir.LIF(tau=np.full(shape, tau * DT), r=np.ones(shape), v_leak=reset, v_threshold=threshold, v_reset=reset)


def _linear_node(nir, module: nn.Linear):
    weight = module.weight.detach().numpy().astype(np.float32)
    if module.bias is None:
        return nir.Linear(weight=weight)
    return nir.Affine(weight=weight, bias=module.bias.detach().numpy().astype(np.float32))


def _fc_nodes(nir, model: FCSNN) -> list[tuple[str, Any]]:
    nodes = []
    for linear, spiking in model.layer_names():
        module = getattr(model, linear)
        nodes.append((linear, _linear_node(nir, module)))
        nodes.append((spiking, _neuron_node(nir, getattr(model, spiking), spiking, (module.out_features,))))
    return nodes


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """The convolution's weight and bias with the batch norm's inference transform folded in."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)  # [C]
    weight = conv.weight.detach() * scale.view(-1, 1, 1, 1)
    bias = bn.bias.detach() - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias.detach() * scale
    # C order whatever the model's layout (the CSNN's weights are channels_last)
    return np.ascontiguousarray(weight.numpy(), np.float32), np.ascontiguousarray(bias.numpy(), np.float32)


def _csnn_nodes(nir, model: CSNN, input_shape: tuple[int, ...]) -> list[tuple[str, Any]]:
    nodes = []
    _, height, width = input_shape
    for k in range(1, model.blocks + 1):
        container = model.encoder if k == 1 else getattr(model, f"conv{k}")
        conv, bn = container[0], container[1]
        weight, bias = _folded(conv, bn)
        name = "encoder" if k == 1 else f"conv{k}"
        nodes.append(
            (
                name,
                nir.Conv2d(
                    input_shape=(height, width),
                    weight=weight,
                    stride=conv.stride,
                    padding=conv.padding,
                    dilation=conv.dilation,
                    groups=conv.groups,
                    bias=bias,
                ),
            )
        )
        channels = conv.out_channels
        nodes.append((f"sn{k}", _neuron_node(nir, getattr(model, f"sn{k}"), f"sn{k}", (channels, height, width))))
        height, width = height // 2, width // 2
        nodes.append(
            (f"pool{k}", nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])))
        )
        nodes.append((f"pool{k}_any", nir.Threshold(threshold=np.full((channels, height, width), POOL_THRESHOLD))))
    nodes.append(
        ("flatten", nir.Flatten(input_type={"input": np.array([channels, height, width])}, start_dim=0, end_dim=-1))
    )
    for linear, spiking in (("fc1", f"sn{model.blocks + 1}"), ("fc2", f"sn{model.blocks + 2}")):
        module = getattr(model, linear)
        nodes.append((linear, _linear_node(nir, module)))
        nodes.append((spiking, _neuron_node(nir, getattr(model, spiking), spiking, (module.out_features,))))
    return nodes


def _spikingjelly_export(model: nn.Module, input_shape: tuple[int, ...]):
    """spikingjelly's export of a network of yours; a layer it cannot map is one line naming it."""
    from spikingjelly.activation_based.nir_exchange import export_to_nir

    expressible = (
        nn.Linear,
        nn.Conv1d,
        nn.Conv2d,
        nn.AvgPool2d,
        nn.Flatten,
        layer.Flatten,
        neuron.IFNode,
        neuron.LIFNode,
        neuron.ParametricLIFNode,
        neuron.CUBALIFNode,
        nn.Dropout,
        layer.Dropout,
        nn.Identity,
    )
    neurons = [name for name, module in model.named_modules() if isinstance(module, BaseNode)]
    for name, module in model.named_modules():
        inside_a_neuron = any(name.startswith(f"{n}.") for n in neurons)  # its surrogate function
        if next(module.children(), None) is None and not inside_a_neuron and not isinstance(module, expressible):
            raise NotExpressible(
                f"layer {name} ({type(module).__name__}): NIR cannot express it (NIR has Linear, "
                f"Conv, AvgPool/SumPool, Flatten and IF/LIF neurons)"
            )
    multi_step = any(getattr(m, "step_mode", "s") == "m" for m in model.modules())
    example = torch.zeros(1, 1, *input_shape) if multi_step else torch.zeros(1, *input_shape)  # [T, N, ...] or [N, ...]
    try:
        return export_to_nir(model, example)
    except Exception as e:  # spikingjelly's tracer or mapper: one line
        raise NotExpressible(
            f"{type(model).__name__}: spikingjelly's NIR export failed ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''})"
        ) from None


# --- from NIR, to check an export -------------------------------------------------------------------


class _SteppedNeuron(nn.Module):
    """A spikingjelly neuron for nirtorch's stateful execution: ``forward(x, state) -> (spikes, state)``."""

    def __init__(self, node: BaseNode):
        super().__init__()
        self.node = node

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        self.node.reset()
        if state is not None:
            self.node.v = state
        spikes = self.node(x)
        return spikes, self.node.v


class _Threshold(nn.Module):
    def __init__(self, theta: np.ndarray):
        super().__init__()
        self.register_buffer("theta", torch.from_numpy(np.asarray(theta, dtype=np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.theta).to(x.dtype)


def _node_map(nir) -> dict:
    def scalar(values: np.ndarray) -> float:
        return float(np.asarray(values).flat[0])

    def if_node(node):
        return _SteppedNeuron(neuron.IFNode(v_threshold=scalar(node.v_threshold), v_reset=scalar(node.v_reset)))

    def lif_node(node):
        return _SteppedNeuron(
            neuron.LIFNode(
                tau=scalar(node.tau) / DT, v_threshold=scalar(node.v_threshold), v_reset=scalar(node.v_reset)
            )
        )

    def flatten(node):  # NIR's dims leave the batch out; torch's count it
        return nn.Flatten(
            node.start_dim + 1 if node.start_dim >= 0 else node.start_dim,
            node.end_dim + 1 if node.end_dim >= 0 else node.end_dim,
        )

    return {
        nir.IF: if_node,
        nir.LIF: lif_node,
        nir.Threshold: lambda node: _Threshold(node.threshold),
        nir.Flatten: flatten,
    }


class NIRNetwork(nn.Module):
    """A NIR graph run as a torch module over time: ``forward(x_seq [T, N, ...]) -> [T, N, outputs]`` spikes."""

    def __init__(self, graph):
        super().__init__()
        import nir
        import nirtorch

        self.graph = nirtorch.nir_to_torch(graph, _node_map(nir))

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        state, outputs = None, []
        with torch.no_grad():
            for x in x_seq:
                out, state = self.graph(x, state)
                outputs.append(out)
        return torch.stack(outputs)


def read_nir(path: Path | str) -> NIRNetwork:
    """A NIR file as a runnable torch module (``NIRNetwork``)."""
    import nir

    return NIRNetwork(nir.read(str(path)))


# --- the command ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .cli import Parser, fail

    parser = Parser(prog="python -m snn.export", description="Write a trained network as NIR.")
    parser.add_argument(
        "folder",
        type=Path,
        help="a run folder (config.json, checkpoint.pt), or an experiment folder: its retrained best network",
    )
    parser.add_argument("--seed", type=int, default=None, help="an experiment's retrain seed (default: the first)")
    parser.add_argument("--out", type=Path, required=True, help="the NIR file to write (HDF5, e.g. model.nir)")
    parser.add_argument("--module", help="export this submodule of a network of yours (the layers its forward runs)")
    args: argparse.Namespace = parser.parse_args(argv)
    try:
        run = run_folder_of(args.folder, args.seed)
        model, config = load_run(run)
        path = write_nir(model, input_shape_of(run), args.out, args.module)
    except (SnnTuneError, CheckpointError) as e:
        fail(f"python -m snn.export: error: {e}")
    print(f"{config.model} from {run} -> {path}")
    return 0


def run_folder_of(folder: Path, seed: int | None = None) -> Path:
    """A run folder itself, or an experiment folder's retrain seed ``seed`` (default: its first)."""
    from .checkpoint import CheckpointError

    if (folder / "checkpoint.pt").is_file():
        return folder
    seeds = sorted(
        (folder / "retrain").glob("seed-*"),
        key=lambda p: int(p.name.removeprefix("seed-")) if p.name.removeprefix("seed-").isdigit() else 1 << 62,
    )
    if seed is not None:
        seeds = [p for p in seeds if p.name == f"seed-{seed}"]
    if not seeds or not (seeds[0] / "checkpoint.pt").is_file():
        which = f"retrain/seed-{seed}" if seed is not None else "retrain/seed-*"
        raise CheckpointError(
            f"{folder}: neither a run folder (no checkpoint.pt) nor an experiment with a retrained "
            f"network ({which}/checkpoint.pt)"
        )
    return seeds[0]


if __name__ == "__main__":
    raise SystemExit(main())
