#!/usr/bin/env python3
"""The PyTorch reference run: what a Python user would write, trained on the very batches
and initial weights that `fwbench train --framework torch` uses.

    python scripts/reference/torch_train.py --export DIR --steps 3 --warmup-steps 1 \
        --threads 2 --json run.json [--profile prof.json]

DIR is written by scripts/bench/export (batches from Go's dataset package, weights from
weights.InitParams, dropout masks from model.DropoutMask, the model description net.json);
every batch, the weights file, every mask file and net.json are checked against the SHA-256
sums Go computed before anything runs.

The model is the one `fwbench train` builds: the export's net.json (model.Net, the layer
graph both Go drivers interpret) run by one generic module, Net below, with torchvision's
parameter names, so VGG, ResNet and MobileNetV2 are the same code (a model is data). Its
ops are torch.nn.functional's, the ones torchvision's modules call (conv2d with stride,
padding and groups, batch_norm with momentum 0.1 and eps 1e-5, relu/relu6 in place,
max_pool2d with padding, adaptive_avg_pool2d, add, flatten, linear). One step is what
torchrun's shim does (torchrun/shim.cc): NHWC -> NCHW contiguous copy, train mode,
zero_grad, forward, cross-entropy, backward, SGD step, loss.item(). Dropout draws nothing:
step i multiplies each dropout layer's input by the exported mask of step i and that layer
(0 or 1 / (1 - p)), as the drivers multiply the masks Go draws, so the losses of both runs
can be compared step by step. In features mode (the manifest's mode) the layers outside
the head are frozen and their batch norms stay in eval mode.

The settings that decide speed are `fwbench train`'s (recipe.Config), spelled the same:
  --precision fp32|tf32|bf16|fp16  bf16/fp16: the forward pass inside
      torch.autocast(device_type, dtype) (conv2d and linear in the low type, every other op
      in the type that reaches it), the loss cross_entropy(logits.float(), y) outside it;
      parameters, gradients, optimizer state and running statistics stay float32. fp16 adds
      torch.amp.GradScaler with its defaults (2^16, x2 after 2000 finite steps, x0.5 and the
      step skipped on inf/nan). torch.backends.cuda.matmul.allow_tf32 and
      torch.backends.cudnn.allow_tf32 are True for tf32 (CUDA only) and False otherwise.
      The initial (evaluation) loss runs under the same precision.
  --channels-last      model and input in torch.channels_last
  --cudnn-benchmark    torch.backends.cudnn.benchmark
  --deterministic      torch.use_deterministic_algorithms(True): deterministic kernels, and an
                       error where torch has none (as fwbench's driver and TF's op determinism)
  --xla                not applicable (recorded "n/a"): libtorch, which fwbench drives, has no
                       counterpart of torch.compile
  --device cpu|cuda[:N]  where to train (default cpu)
The record's settings hold the six keys of recipe.SettingKeys as read back from torch
(tf32 "false" on the CPU, where TF32 does not exist), and its top-level "precision".
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


class Net(nn.Module):
    """The model of net.json (model.Net) as one generic nn.Module: forward runs the layer list
    in order with torch.nn.functional ops, each layer reading the outputs its "inputs" name
    (-1: the image). Tensors live in empty container modules at torchvision's module paths
    ("layer1.0.conv1" holds weight), so state_dict() has torchvision's names and
    load_state_dict takes the exported weights (model.Net.Params; no num_batches_tracked:
    F.batch_norm is given the momentum). ReLU runs in place where torchvision's does
    (its input is a conv, batch norm, add or linear output read by nothing else), and so
    does a residual add into the branch output it ends (torchvision's `out += identity`).

    Dropout draws nothing: set_masks(ms) before a training step gives dropout layer k
    (mask number k) the [batch, width] mask ms[k], which multiplies its input in training
    mode; without masks (dropout 0) and in eval mode it is the identity. frozen_base
    (features mode) freezes the layers outside the head and keeps their batch norms in eval
    mode."""

    def __init__(self, net, frozen_base=False):
        super().__init__()
        self.layers = net["layers"]
        self.frozen_base = frozen_base
        self.last = benchlib.last_use(net)
        self.masks = None
        users = benchlib.consumers(net)
        # Layers whose output torchvision overwrites in place: read once, and not needed by
        # their own backward (conv, batch norm, add and linear save their inputs).
        owned = [users[i] == 1 and l["op"] in ("conv", "batch_norm", "add", "linear") for i, l in enumerate(self.layers)]
        self.inplace = [l["op"] in ("relu", "relu6") and l["inputs"][0] != benchlib.IMAGE and owned[l["inputs"][0]]
                        or l["op"] == "add" and owned[l["inputs"][1]]
                        for l in self.layers]
        self.mods = []
        for l in self.layers:
            m, c = None, l["in"][0]
            if l["op"] == "conv":
                m = self.module(l["name"])
                m.weight = nn.Parameter(torch.empty(l["out"], c // l["groups"], l["kernel"], l["kernel"]))
                m.bias = nn.Parameter(torch.empty(l["out"])) if l["bias"] else None
            elif l["op"] == "batch_norm":
                m = self.module(l["name"])
                m.weight, m.bias = nn.Parameter(torch.empty(c)), nn.Parameter(torch.empty(c))
                m.register_buffer("running_mean", torch.zeros(c))
                m.register_buffer("running_var", torch.ones(c))
            elif l["op"] == "linear":
                m = self.module(l["name"])
                m.weight, m.bias = nn.Parameter(torch.empty(l["out"], c)), nn.Parameter(torch.empty(l["out"]))
            if m is not None and frozen_base and not l["head"]:
                m.requires_grad_(False)
            self.mods.append(m)

    def module(self, path):
        """The container at a dotted module path, made on first use."""
        m = self
        for part in path.split("."):
            if part not in m._modules:
                m.add_module(part, nn.Module())
            m = m._modules[part]
        return m

    def set_masks(self, ms):
        self.masks = ms

    def forward(self, x):
        outs = [None] * len(self.layers)
        for i, l in enumerate(self.layers):
            ins = [x if j == benchlib.IMAGE else outs[j] for j in l["inputs"]]
            h, op, m = ins[0], l["op"], self.mods[i]
            if op == "conv":
                h = F.conv2d(h, m.weight, m.bias, l["stride"], l["pad"], 1, l["groups"])
            elif op == "batch_norm":
                train = self.training and not (self.frozen_base and not l["head"])
                h = F.batch_norm(h, m.running_mean, m.running_var, m.weight, m.bias, train,
                                 benchlib.BN_MOMENTUM, benchlib.BN_EPS)
            elif op == "relu":
                h = F.relu(h, inplace=self.inplace[i])
            elif op == "relu6":
                h = F.relu6(h, inplace=self.inplace[i])
            elif op == "max_pool":
                h = F.max_pool2d(h, l["kernel"], l["stride"], l["pad"])
            elif op == "adaptive_avg_pool":
                h = F.adaptive_avg_pool2d(h, l["size"])
            elif op == "add":
                h = ins[1].add_(h) if self.inplace[i] else h + ins[1]
            elif op == "flatten":
                h = torch.flatten(h, 1)
            elif op == "linear":
                h = F.linear(h, m.weight, m.bias)
            elif op == "dropout":
                if self.training and self.masks is not None:
                    h = h * self.masks[l["mask"]].view(h.shape)
            outs[i] = h
            for j in l["inputs"]:
                if j != benchlib.IMAGE and self.last[j] == i:
                    outs[j] = None  # autograd keeps what it needs
        return outs[-1]


LOW = {"bf16": torch.bfloat16, "fp16": torch.float16}


def to_input(x, device="cpu", channels_last=False):
    # NHWC float32 from Go's dataset -> NCHW contiguous, as the shim does; in channels_last
    # the permuted NHWC array already has the strides torch wants (no copy on the CPU).
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.from_numpy(x).permute(0, 3, 1, 2).to(device).contiguous(memory_format=fmt)


def memory_format(model):
    """The model's memory format as torch has it: "channels_last" when the first conv weight
    whose layout tells (more than one input channel and a kernel over 1) is channels_last
    contiguous, else "contiguous"."""
    for p in model.parameters():
        if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] > 1:
            return "channels_last" if p.is_contiguous(memory_format=torch.channels_last) else "contiguous"
    return "contiguous"


def load_weights(model, w):
    """Loads canonical (torchvision layout) numpy tensors; the names must be the model's."""
    sd = model.state_dict()
    if set(sd) != set(w):
        sys.exit(f"torch_train: weights file names differ from the model's: {sorted(set(sd) ^ set(w))[:6]}")
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in w.items()})


def main():
    p = benchlib.common_args(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = p.parse_args()
    dev = torch.device(args.device)
    gpu = dev.type == "cuda"
    benchlib.check_precision(args, gpu)
    if args.xla:
        print("torch_train: --xla is TensorFlow's; libtorch has no counterpart (recorded n/a)", file=sys.stderr)
    # The settings that decide speed, before any kernel runs.
    tf32 = args.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS' condition for determinism
        torch.use_deterministic_algorithms(True)
    low = LOW.get(args.precision)
    interop = args.interop_threads or args.threads
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(interop)
    t_start = time.perf_counter()
    man, net, batches, w, wsum = benchlib.load_export(args.export, args.steps)
    masks = benchlib.load_masks(args.export, man, net, args.steps, args.dropout)
    masks = None if masks is None else [torch.from_numpy(m).to(dev) for m in masks]

    model = Net(net, frozen_base=man["mode"] == "features")
    load_weights(model, w)
    del w
    model.to(dev)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=args.lr, momentum=args.momentum,
                          weight_decay=0.0)
    scaler = None
    if args.precision == "fp16":
        scaler = torch.amp.GradScaler(dev.type, init_scale=benchlib.LOSS_SCALE_INIT,
                                      growth_factor=benchlib.LOSS_SCALE_GROWTH,
                                      backoff_factor=benchlib.LOSS_SCALE_BACKOFF,
                                      growth_interval=benchlib.LOSS_SCALE_GROWTH_INTERVAL)

    def forward(xt):
        """The logits in float32: the model under autocast in bf16/fp16 (its low logits cast
        back), as is in fp32/tf32."""
        with torch.autocast(dev.type, dtype=low or torch.float32, enabled=low is not None):
            logits = model(xt)
        logits_dtype[0] = str(logits.dtype).removeprefix("torch.")
        return logits.float()

    logits_dtype = [None]  # what the model's last linear returned: bfloat16/float16 under autocast

    # The parity value: the first batch, dropout off, no update (compare.Train does the same).
    model.eval()
    with torch.no_grad():
        x0, y0 = batches[0]
        initial_loss = F.cross_entropy(forward(to_input(x0, dev, args.channels_last)),
                                       torch.from_numpy(y0).long().to(dev)).item()

    skipped = [0]

    def step(i, x, y):
        xt = to_input(x, dev, args.channels_last)
        yt = torch.from_numpy(y).to(torch.int64).to(dev)
        if masks is not None:
            # The profiled extra step (i = steps) reuses step 0's masks with batch 0.
            model.set_masks(masks[i % len(masks)])
        model.train()
        opt.zero_grad()
        loss = F.cross_entropy(forward(xt), yt)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            before = scaler.get_scale()
            scaler.scale(loss).backward()
            scaler.step(opt)  # skipped when a gradient is inf/nan
            scaler.update()
            skipped[0] += scaler.get_scale() < before
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

    settings = benchlib.speed_settings(
        precision=args.precision,
        tf32=gpu and torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32,
        memory_format=memory_format(model), cudnn_benchmark=torch.backends.cudnn.benchmark, xla=None,
        deterministic=torch.are_deterministic_algorithms_enabled())
    if scaler is not None:
        settings |= {"loss_scale": scaler.get_scale(), "loss_scale_skipped_steps": skipped[0]}
    settings |= {
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "autocast": f"torch.autocast({dev.type!r}, {low})" if low else "off", "logits_dtype": logits_dtype[0],
        "input": "NHWC permuted to NCHW every step" + (", channels_last strides" if args.channels_last else ", copied contiguous"),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "mkldnn_enabled": torch.backends.mkldnn.enabled, "mkldnn_available": torch.backends.mkldnn.is_available(),
        "model": man["model"], "head": man["head"], "builder": "torch_train.Net (net.json, torch.nn.functional)",
        "dropout": args.dropout, "hidden": man["hidden"], "momentum": args.momentum, "weight_decay": 0.0,
        "optimizer_impl": "torch.optim.SGD (foreach default: for-loop on CPU)",
        "grad": "enabled",
        "python": sys.version.split()[0], "numpy": np.__version__,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "(unset)"),
        "cpu": benchlib.cpu_model(),
    }
    rec = benchlib.make_record(framework="torch", version=torch.__version__.split("+")[0], threads=torch.get_num_threads(),
                               man=man, args=args, initial_loss=initial_loss, losses=losses, step_times=times,
                               total_seconds=total, weights_sha=wsum, settings=settings,
                               faults_per_step=faults, device="cuda" if gpu else "cpu")
    if gpu:
        # libtorch's caching allocator's peak, as fwbench's record has it (peak_gpu_allocator_bytes).
        rec["peak_gpu_allocator_bytes"] = torch.cuda.max_memory_allocated(dev)
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
