#!/usr/bin/env python3
"""The PyTorch reference run: what a Python user would write, trained on the very batches
and initial weights that `fwbench train --framework torch` uses.

    python scripts/reference/torch_train.py --export DIR --steps 3 --warmup-steps 1 \
        --threads 2 --json run.json [--profile prof.json]

DIR is written by scripts/bench/export (batches from Go's dataset package, weights from
weights.InitParams, dropout masks from model.DropoutMask); every batch, the weights file and
every mask file are checked against the SHA-256 sums Go computed before anything runs.

The model is torchvision's VGG16 (torchvision.models.vgg16 builds the same nn.Sequential
`features` and `classifier` with the same parameter names) with fwbench's two choices: the
base is flattened directly into the classifier (no AdaptiveAvgPool2d, see package vgg), and
the classifier is 4096-4096-classes with dropout. One step is what torchrun's shim does
(torchrun/shim.cc tr_train_step): NHWC -> NCHW contiguous copy, train mode, zero_grad,
forward, cross-entropy, backward, SGD step, loss.item(). Dropout draws nothing: step i
multiplies each hidden layer's activation (after ReLU) by the exported mask of step i and
that layer (0 or 1 / (1 - p)), as the shim multiplies the masks Go passes it, so the losses
of both runs can be compared step by step.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class MaskDropout(nn.Module):
    """Dropout in training mode with a given mask (see module doc): self.mask, set before
    each step, is the [batch, hidden] mask of this layer; None means no dropout."""

    def __init__(self):
        super().__init__()
        self.mask = None

    def forward(self, h):
        if not self.training or self.mask is None:
            return h
        return h * self.mask


class VGG(nn.Module):
    """torchvision.models.VGG without the adaptive pool; names features.N, classifier.{0,3,6}."""

    def __init__(self, image_size, classes, hidden):
        super().__init__()
        layers, cin, s = [], 3, image_size
        for _, kind, v in benchlib.features_layout():
            if kind == "pool":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                s //= 2
            else:
                layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(cin * s * s, hidden), nn.ReLU(True), MaskDropout(),
            nn.Linear(hidden, hidden), nn.ReLU(True), MaskDropout(),
            nn.Linear(hidden, classes),
        )
        self.dropouts = (self.classifier[2], self.classifier[5])

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def to_input(x):
    # NHWC float32 from Go's dataset -> NCHW contiguous, as the shim does.
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def main():
    args = benchlib.common_args(argparse.ArgumentParser(description=__doc__.split("\n")[0])).parse_args()
    interop = args.interop_threads or args.threads
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(interop)
    t_start = time.perf_counter()
    man, batches, w, wsum = benchlib.load_export(args.export, args.steps)
    masks = benchlib.load_masks(args.export, man, args.steps, args.dropout)
    masks = None if masks is None else [torch.from_numpy(m) for m in masks]

    model = VGG(man["image_size"], man["classes"], man["hidden"])
    sd = model.state_dict()
    if set(sd) != set(w):
        sys.exit(f"torch_train: weights file names differ from the model's: {sorted(set(sd) ^ set(w))[:6]}")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in w.items()})
    del w
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=0.0)

    # The parity value: the first batch, dropout off, no update (compare.Train does the same).
    model.eval()
    with torch.no_grad():
        x0, y0 = batches[0]
        initial_loss = F.cross_entropy(model(to_input(x0)), torch.from_numpy(y0).long()).item()

    def step(i, x, y):
        xt = to_input(x)
        yt = torch.from_numpy(y).to(torch.int64)
        if masks is not None:
            # The profiled extra step (i = steps) reuses step 0's masks with batch 0.
            m = masks[i % len(masks)]
            model.dropouts[0].mask, model.dropouts[1].mask = m[0], m[1]
        model.train()
        opt.zero_grad()
        loss = F.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
        return loss.item()

    losses, times = [], []
    flt0 = 0
    for i, (x, y) in enumerate(batches):
        if i == args.warmup_steps:
            flt0 = benchlib.minor_faults()
        t0 = time.perf_counter()
        loss = step(i, x, y)
        times.append(time.perf_counter() - t0)
        losses.append(loss)
        print(f"torch step {i + 1}/{len(batches)}: loss {loss:.6f} {times[-1]:.3f} s", file=sys.stderr)
    total = time.perf_counter() - t_start
    faults = (benchlib.minor_faults() - flt0) / max(1, len(batches) - args.warmup_steps)

    settings = {
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "memory_format": "contiguous (NCHW), input permuted from NHWC every step",
        "mkldnn_enabled": torch.backends.mkldnn.enabled, "mkldnn_available": torch.backends.mkldnn.is_available(),
        "dropout": args.dropout, "hidden": man["hidden"], "momentum": args.momentum, "weight_decay": 0.0,
        "optimizer_impl": "torch.optim.SGD (foreach default: for-loop on CPU)",
        "grad": "enabled", "deterministic": torch.are_deterministic_algorithms_enabled(),
        "python": sys.version.split()[0], "numpy": np.__version__,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "(unset)"),
        "cpu": benchlib.cpu_model(),
    }
    rec = benchlib.make_record(framework="torch", version=torch.__version__.split("+")[0], threads=torch.get_num_threads(),
                               man=man, args=args, initial_loss=initial_loss, losses=losses, step_times=times,
                               total_seconds=total, weights_sha=wsum, settings=settings,
                               faults_per_step=faults)
    if args.json:
        benchlib.write_json(args.json, rec)
    if args.profile:
        benchlib.write_json(args.profile, profile(step, batches, len(batches)))
    print(f"torch {torch.__version__}: initial loss {initial_loss:.6f}, step p50 {rec['step_seconds']['p50']:.3f} s, "
          f"{rec['images_per_second']:.2f} images/s, peak RSS {rec['peak_rss_bytes'] >> 20} MiB", file=sys.stderr)


def classify(name):
    n = name.lower()
    if "optimizer.step" in n or "sgd" in n or n.startswith("optimizer"):
        return "optimizer"
    if "conv" in n:
        return "conv"
    if n in ("aten::addmm", "aten::mm", "aten::linear", "aten::matmul") or "addmmbackward" in n or "mmbackward" in n:
        return "linear"
    return "other"


def profile(step, batches, i0):
    """One more step (on batch 0, with the momentum state of the run) under torch.profiler:
    self CPU time per op, summed into conv / linear / optimizer / other."""
    from torch.profiler import ProfilerActivity, profile as tprofile, record_function

    x, y = batches[0]
    t0 = time.perf_counter()
    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("train_step"):
            step(i0, x, y)
    wall = time.perf_counter() - t0
    split, ops = {}, []
    for e in prof.key_averages():
        if e.key == "train_step":
            continue
        us = e.self_cpu_time_total
        ops.append({"op": e.key, "self_us": us, "calls": e.count})
    # Optimizer: Optimizer.step#SGD.step is a record_function range; its children are
    # aten::add_ etc. Attribute the ops under it by re-profiling ranges is costly, so the
    # split uses the range's total (cpu_time_total) and removes it from "other".
    opt_total = sum(e.cpu_time_total for e in prof.key_averages() if e.key.startswith("Optimizer."))
    for o in ops:
        c = classify(o["op"])
        if c == "optimizer":
            continue
        split[c] = split.get(c, 0) + o["self_us"]
    split["optimizer"] = opt_total
    split["other"] = max(0, split.get("other", 0) - opt_total)
    ops.sort(key=lambda o: -o["self_us"])
    return {"framework": "torch", "profiler": "torch.profiler (CPU, self time per op)",
            "wall_seconds": wall, "split_us": split, "top_ops": ops[:25]}


if __name__ == "__main__":
    main()
