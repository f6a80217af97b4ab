#!/usr/bin/env python3
"""Make fwbench's per-model reference fixtures from torchvision's own modules.

Run from the repository root with the project's Python reference environment (torch,
torchvision, numpy, safetensors; scripts/bench/pyenv.sh):

    ~/.cache/fwbench/pyref/bin/python scripts/reference/make_model_fixtures.py

It writes two kinds of fixture (see scripts/reference/README.md for the keys):

testdata/reference/models_s32.safetensors
    For resnet18, resnet50 and mobilenet_v2 (torchvision.models.<name>(weights=None,
    num_classes=3)) and vgg11_bn (torchvision's module with model.Build's flatten head:
    avgpool an Identity, classifier Linear(512, 16), ReLU, Dropout, Linear(16, 16), ReLU,
    Dropout, Linear(16, 3)): every float tensor set from the internal/reftest formula
    (tensor k = the k-th state-dict entry without num_batches_tracked, make_fixture.py's
    load_formula), dropout 0, and on the reference input (reftest.Input(4, 32)) the
    eval-mode logits and loss, the train-mode logits and loss of one SGD step, and the
    tensors after that step.

testdata/reference/models_s64.safetensors
    The same for resnet50 and mobilenet_v2 at 64 px on reftest.Input(8, 64), where
    train-mode BatchNorm's batch statistics average over more values than at 32 px × 4.
    Its metadata also holds "float64_spread": how far PyTorch's own float32 step is from
    the same step in float64 (same float32 starting values), the floor that any float32
    implementation can reach.

weights/testdata/{resnet18,resnet50,mobilenet_v2}{,_legacy}.pth.gz.gz
    torch.save of torchvision.models.<name>(weights=None) (1000 classes) in the zip and
    the legacy format, each gzipped twice, with the formula values except that element j
    of a tensor takes the value of element j mod TV_PERIOD (127, not make_fixture.py's
    1009: with 1009 the first 1009 values of each of the 267 and 262 tensors of resnet50
    and mobilenet_v2 are incompressible, 589 KB and 477 KB gzipped twice).
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import time

import numpy as np
import torch
import torchvision
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixture import load_formula, make_input, make_model, weights_sha256  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "testdata", "reference", "models_s32.safetensors")
OUT64 = os.path.join(ROOT, "testdata", "reference", "models_s64.safetensors")
WEIGHTS_OUT = os.path.join(ROOT, "weights", "testdata")
TV_PERIOD = 127  # the weight files repeat every TV_PERIOD values of each tensor so that they compress
TV_MODELS = ["resnet18", "resnet50", "mobilenet_v2"]
nn = torch.nn

# The fixture's configuration (also recorded in __metadata__["config"]).
CONFIG = {
    "models": ["resnet18", "resnet50", "mobilenet_v2", "vgg11_bn"],
    # model.Spec of each model: the Go test builds these and compares names and weights.
    "specs": {
        "resnet18": {"name": "resnet18", "head": "torchvision", "image_size": 32, "classes": 3},
        "resnet50": {"name": "resnet50", "head": "torchvision", "image_size": 32, "classes": 3},
        "mobilenet_v2": {"name": "mobilenet_v2", "head": "torchvision", "image_size": 32, "classes": 3},
        "vgg11_bn": {"name": "vgg11_bn", "head": "flatten", "image_size": 32, "classes": 3, "hidden": 16},
    },
    # the output Linear of each model, stored in full after the step
    "output": {"resnet18": "fc", "resnet50": "fc", "mobilenet_v2": "classifier.1", "vgg11_bn": "classifier.6"},
    "image_size": 32,
    "classes": 3,
    "dropout": 0.0,
    "batch": 4,
    "sgd": {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False, "dampening": 0.0},
    "dtype": "float32",
    "device": "cpu",
}

# models_s64: resnet50 and mobilenet_v2 at 64 px, batch 8 (otherwise as CONFIG), with
# the float32-vs-float64 spread measured.
CONFIG64 = {
    **CONFIG,
    "models": ["resnet50", "mobilenet_v2"],
    "specs": {
        "resnet50": {"name": "resnet50", "head": "torchvision", "image_size": 64, "classes": 3},
        "mobilenet_v2": {"name": "mobilenet_v2", "head": "torchvision", "image_size": 64, "classes": 3},
    },
    "output": {"resnet50": "fc", "mobilenet_v2": "classifier.1"},
    "image_size": 64,
    "batch": 8,
}
FIRST = 64  # other updated tensors: their first FIRST values (flat, row-major)


def build(name, c):
    """The torchvision module for name in configuration c (num_classes 3, dropout 0), with
    the formula weights. Returns the module and its tensor names in order."""
    if name == "vgg11_bn":
        hidden = c["specs"][name]["hidden"]
        m = torchvision.models.vgg11_bn(weights=None, num_classes=c["classes"])
        # model.Build's flatten head: no AdaptiveAvgPool2d((7, 7)), classifier.0 reads 512·(S/32)² features.
        m.avgpool = nn.Identity()
        flat = 512 * (c["image_size"] // 32) ** 2
        m.classifier = nn.Sequential(
            nn.Linear(flat, hidden), nn.ReLU(True), nn.Dropout(c["dropout"]),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(c["dropout"]),
            nn.Linear(hidden, c["classes"]),
        )
    else:
        m = getattr(torchvision.models, name)(weights=None, num_classes=c["classes"])
        if name == "mobilenet_v2":
            assert isinstance(m.classifier[0], nn.Dropout)
            m.classifier[0].p = c["dropout"]
    dropouts = [x.p for x in m.modules() if isinstance(x, nn.Dropout)]
    assert all(p == 0.0 for p in dropouts), f"{name}: dropout {dropouts}"
    return m, load_formula(m)


def record(out, sums, prefix, m, init, output):
    """The output layer's tensors in full; every other tensor's first FIRST values, and in
    sums the float64 sum of its values, of its change from init and of the absolute change."""
    for name, t in m.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        t = t.detach().contiguous()
        if name.rsplit(".", 1)[0] == output:
            out[f"{prefix}/{name}"] = t.clone()
            continue
        flat = t.reshape(-1)
        out[f"{prefix}/{name}/first{FIRST}"] = flat[:FIRST].clone()
        d = flat.double() - init[name].reshape(-1).double()
        sums[f"{prefix}/{name}"] = {
            "sum": float(flat.double().sum()),
            "delta_sum": float(d.sum()),
            "delta_abs_sum": float(d.abs().sum()),
        }


def compact(obj):
    """JSON without spaces (the metadata is most of the file)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def sgd_step(name, c, x, y, dtype=torch.float32):
    """One SGD step of the formula-weight model in dtype (from the same float32 values).
    Returns the module after the step, its train-mode logits and loss."""
    s = c["sgd"]
    m, _ = build(name, c)
    m = m.to(dtype)
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=s["lr"], momentum=s["momentum"], dampening=s["dampening"],
                          weight_decay=s["weight_decay"], nesterov=s["nesterov"])
    opt.zero_grad()
    logits = m(x.to(dtype))
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    opt.step()
    return m, logits.detach(), loss.detach()


def spread(name, c, x, y, init, eval32, m32, train_loss32):
    """How far PyTorch's float32 results are from the same computation in float64 (from the
    same float32 starting values): the floor that any float32 implementation can reach.

    eval_logits: max|Δ| / max|logit|; eval_loss, train_loss: relative. For the updates
    Δw = w_after − w_init, per tensor: output_update = max over the output layer of
    max|Δw32 − Δw64| / max|Δw64| (whole tensors); first64_update = the same over the first
    FIRST values of every other tensor (worst, median, 90th percentile, and the worst
    tensor's name), first64_update_norm = ‖Δw32 − Δw64‖ / ‖Δw64‖ on those values (worst,
    median); sums = max over the other tensors of |ΣΔw32 − ΣΔw64| and |Σ|Δw32| − Σ|Δw64||
    relative to Σ|Δw64|; over_1e-4 = the share of compared elements whose difference exceeds
    1e-4 of their tensor's largest change. Parameters whose float64 gradient is zero up to
    rounding (below 1e-9 of the model's largest; their exact gradient is 0, e.g. the bias of
    a BatchNorm whose output only reaches train-mode BatchNorms through residual adds and
    unpadded convolutions) are listed in zero_gradient and left out of the update figures:
    their float32 change is weight decay plus cancellation noise."""
    logits32, loss32 = eval32
    m64, _ = build(name, c)
    m64 = m64.double().eval()
    with torch.no_grad():
        logits64_eval = m64(x.double())
        loss64_eval = nn.functional.cross_entropy(logits64_eval, y)
    m64, _, loss64 = sgd_step(name, c, x, y, torch.float64)
    sd32, sd64 = m32.state_dict(), m64.state_dict()
    g64 = {k: float(p.grad.abs().max()) for k, p in m64.named_parameters()}
    zero = sorted(k for k, g in g64.items() if g < 1e-9 * max(g64.values()))
    out, first, first_norm, sums, over, total = 0.0, [], [], 0.0, 0, 0
    for k, w0 in init.items():
        if k.endswith("num_batches_tracked") or k in zero:
            continue
        d32 = (sd32[k].double() - w0.double()).reshape(-1)
        d64 = (sd64[k] - w0.double()).reshape(-1)
        whole = k.rsplit(".", 1)[0] == c["output"][name]
        a, b = (d32, d64) if whole else (d32[:FIRST], d64[:FIRST])
        e = (a - b).abs() / (float(b.abs().max()) or 1.0)
        over += int((e > 1e-4).sum())
        total += e.numel()
        if whole:
            out = max(out, float(e.max()))
            continue
        first.append((float(e.max()), k))
        first_norm.append(float((a - b).norm() / (float(b.norm()) or 1.0)))
        da = float(d64.abs().sum()) or 1.0
        sums = max(sums, abs(float(d32.sum()) - float(d64.sum())) / da, abs(float(d32.abs().sum()) - da) / da)
    first.sort()
    fv = [v for v, _ in first]
    first_norm.sort()
    return {
        "eval_logits": float((logits32.double() - logits64_eval).abs().max() / logits64_eval.abs().max()),
        "eval_loss": abs(float(loss32) - float(loss64_eval)) / float(loss64_eval),
        "train_loss": abs(float(train_loss32) - float(loss64)) / float(loss64),
        "output_update": out,
        "first64_update": {"max": fv[-1], "median": fv[len(fv) // 2], "p90": fv[int(0.9 * (len(fv) - 1))],
                           "worst": first[-1][1]},
        "first64_update_norm": {"max": first_norm[-1], "median": first_norm[len(first_norm) // 2],
                                "p90": first_norm[int(0.9 * (len(first_norm) - 1))]},
        "sums": sums,
        "over_1e-4": over / total,
        "zero_gradient": zero,
    }


def reference(c, path, with_spread):
    x, y = make_input(c["batch"], c["image_size"], c["classes"])
    out, sums, names, shas, spreads, summary = {}, {}, {}, {}, {}, []
    for name in c["models"]:
        t0 = time.time()
        m, ns = build(name, c)
        names[name] = ns
        shas[name] = weights_sha256(m, ns)
        init = {k: v.clone() for k, v in m.state_dict().items()}
        m.eval()
        with torch.no_grad():
            logits = m(x)
            loss = nn.functional.cross_entropy(logits, y)
        out[f"{name}/logits"] = logits.clone()
        out[f"{name}/loss"] = loss.reshape(1).clone()
        if name == "vgg11_bn":
            # The same model as make_fixture.py's hand-built vgg11_bn (its "bn" part): same names,
            # same starting bytes.
            mb = make_model("vgg11_bn", c["specs"][name]["hidden"], c["classes"], c["image_size"], c["dropout"])
            assert load_formula(mb) == ns and weights_sha256(mb, ns) == shas[name], "vgg11_bn: differs from make_fixture.py's"

        m, train_logits, l = sgd_step(name, c, x, y)
        out[f"{name}/train_logits"] = train_logits.clone()
        out[f"{name}/sgd1/loss"] = l.reshape(1).clone()
        record(out, sums, f"{name}/sgd1", m, init, c["output"][name])
        line = f"{name}: {len(ns)} tensors, eval loss {float(loss):.6f}, train loss {float(l):.6f}"
        if with_spread:
            spreads[name] = spread(name, c, x, y, init, (logits, loss), m, l)
            line += f"\n  float32 vs float64: {compact(spreads[name])}"
        summary.append(f"{line} ({time.time() - t0:.1f} s)")

    meta = {
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "numpy_version": np.__version__,
        "python": sys.version.split()[0],
        "torch_threads": str(torch.get_num_threads()),
        "config": compact(c),
        "names": compact(names),
        "sums": compact(sums),
        "weights_sha256": compact(shas),
        "input_sha256": hashlib.sha256(x.permute(0, 2, 3, 1).contiguous().numpy().astype("<f4").tobytes()).hexdigest(),
        "first": str(FIRST),
        "generator": "scripts/reference/make_model_fixtures.py",
    }
    if with_spread:
        meta["float64_spread"] = compact(spreads)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    save_file({k: v.contiguous() for k, v in out.items()}, tmp, metadata=meta)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes, {len(out)} tensors)")
    for line in summary:
        print(line)


def gz2(data):
    """gzip twice, deterministically (no name, mtime 0), as make_weights_fixtures.py."""
    return gzip.compress(gzip.compress(data, 9, mtime=0), 9, mtime=0)


def weight_files(args):
    for name in TV_MODELS:
        m = getattr(torchvision.models, name)(weights=None)
        load_formula(m, TV_PERIOD)
        sd = m.state_dict()
        for legacy in (False, True):
            b = io.BytesIO()
            torch.save(sd, b, _use_new_zipfile_serialization=not legacy)
            data = b.getvalue()
            back = torch.load(io.BytesIO(data), weights_only=True)
            assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd), f"{name}: read back differs"
            file = f"{name}{'_legacy' if legacy else ''}.pth.gz.gz"
            path = os.path.join(args.weights_out, file)
            with open(path + ".tmp", "wb") as f:
                f.write(gz2(data))
            os.chmod(path + ".tmp", 0o644)
            os.replace(path + ".tmp", path)
            n = sum(1 for v in sd.values() if v.is_floating_point())
            print(f"wrote {os.path.relpath(path, ROOT)}: {'legacy' if legacy else 'zip'}, {n} float32 tensors, "
                  f"{len(data)} bytes -> {os.path.getsize(path)} in the repository")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--out64", default=OUT64)
    ap.add_argument("--skip-s32", action="store_true", help="do not write models_s32.safetensors")
    ap.add_argument("--weights-out", default=WEIGHTS_OUT, help="where to write the torchvision weight files")
    ap.add_argument("--skip-weights", action="store_true", help="do not write the weight files")
    args = ap.parse_args()
    assert torchvision.__version__.split("+")[0] == "0.26.0", f"torchvision {torchvision.__version__}, want 0.26.0"
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    if not args.skip_s32:
        reference(CONFIG, args.out, False)
    reference(CONFIG64, args.out64, True)
    if not args.skip_weights:
        weight_files(args)
    print(f"done in {time.time() - t0:.1f} s (torch {torch.__version__}, torchvision {torchvision.__version__})")


if __name__ == "__main__":
    main()
