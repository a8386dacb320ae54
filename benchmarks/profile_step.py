"""Where a training or evaluation batch spends its time: torch.profiler's table for the seed configurations.

    SNN_DATA_DIR=DIR python -m benchmarks.profile_step fc
    SNN_DATA_DIR=DIR python -m benchmarks.profile_step csnn --eval --batches 4

Runs the project's own trainer step (forward, MSE on the firing rate, backward, optimizer step)
or ``snn.training.evaluate`` on 128-image batches of real MNIST, after warm-up batches (which
also compile the CSNN's large neuron steps), and prints the operators by self CPU time.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from snn.config import MODELS, RunConfig
from snn.data import default_data_dir, make_splits, read_dataset
from snn.networks import build_model
from snn.training import evaluate, make_optimizer, rate_loss

BATCH = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=MODELS)
    parser.add_argument("--eval", action="store_true", help="profile evaluation instead of training")
    parser.add_argument("--batches", type=int, default=10, help="profiled batches (default 10)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = RunConfig(model=args.model, epochs=1)
    data = read_dataset(default_data_dir(), download=False)
    splits = make_splits(
        data, config.replace(limit_train=BATCH * (args.warmup + args.batches), limit_test=BATCH * args.batches)
    )
    torch.manual_seed(0)
    model = build_model(config, data.input_shape, data.classes)
    optimizer = make_optimizer(config, model.parameters())

    def train_batch(i: int) -> None:
        index = torch.arange(i * BATCH, (i + 1) * BATCH)
        out = model(splits.train.float_images(index))
        loss = rate_loss(out, splits.train.labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if args.eval:
        evaluate(model, splits.test.head(BATCH), config)  # warm-up
        step = lambda: evaluate(model, splits.test, config)  # noqa: E731
    else:
        model.train()
        for i in range(args.warmup):
            train_batch(i)
        step = lambda: [train_batch(args.warmup + i) for i in range(args.batches)]  # noqa: E731
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        step()
        seconds = time.perf_counter() - start
    what = "evaluation" if args.eval else "training"
    print(
        f"{args.model} {what}: {args.batches} batches of {BATCH}, {torch.get_num_threads()} threads, "
        f"{args.batches * BATCH / seconds:,.0f} images/s under the profiler"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
