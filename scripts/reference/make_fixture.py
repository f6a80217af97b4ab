#!/usr/bin/env python3
"""Make fwbench's numerical reference fixtures: testdata/reference/vgg16_s32.safetensors
(and torchrun/testdata/vgg11_s32.pth with its logits).

Run with the project's Python reference environment (torch + numpy + safetensors):

    /root/.cache/fwbench/pyref/bin/python scripts/reference/make_fixture.py

The weights and the input batch come from the closed-form formulas of the Go
package internal/reftest (reimplemented here in numpy, bit for bit), so the Go
drivers start from exactly the values PyTorch starts from without shipping a
weight file. See scripts/reference/README.md for what the file holds.
"""

import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "testdata", "reference", "vgg16_s32.safetensors")
PTH_DIR = os.path.join(ROOT, "torchrun", "testdata")
PTH_PERIOD = 1009  # the .pth fixture repeats every 1009 values so that DEFLATE shrinks it

CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

# The fixture's configuration (also recorded in __metadata__).
CONFIG = {
    "model": "vgg16",
    "image_size": 32,
    "classes": 3,
    "hidden": 32,
    "dropout": 0.0,
    "batch": 4,
    "sgd": {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False, "dampening": 0.0},
    "adam": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
    "dtype": "float32",
    "device": "cpu",
}
# A BatchNorm check on a smaller model: logits in eval and train mode, running stats after one SGD step.
BN_CONFIG = {"model": "vgg11_bn", "image_size": 32, "classes": 3, "hidden": 16, "dropout": 0.0, "batch": 4}


def u(k, n):
    """u(k, j) for j in [0, n) as float64: uint32(j*2654435761 + k*40503 + 12345) / 2^32 - 0.5."""
    j = np.arange(n, dtype=np.uint64)
    h = (j * np.uint64(2654435761) + np.uint64(k * 40503 + 12345)) & np.uint64(0xFFFFFFFF)
    return h.astype(np.float64) / 4294967296.0 - 0.5


def make_model(name, hidden, classes, image_size, dropout):
    bn = name.endswith("_bn")
    layers, c = [], 3
    for v in CFGS[name.removesuffix("_bn")]:
        if v == "M":
            layers.append(torch.nn.MaxPool2d(2, 2))
            continue
        layers.append(torch.nn.Conv2d(c, v, 3, padding=1))
        if bn:
            layers.append(torch.nn.BatchNorm2d(v))
        layers.append(torch.nn.ReLU(inplace=True))
        c = v
    m = torch.nn.Module()
    m.features = torch.nn.Sequential(*layers)
    flat = 512 * (image_size // 32) ** 2
    # fwbench flattens the base directly (no AdaptiveAvgPool2d((7, 7))); see package model (HeadFlatten).
    m.classifier = torch.nn.Sequential(
        torch.nn.Linear(flat, hidden), torch.nn.ReLU(True), torch.nn.Dropout(dropout),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(True), torch.nn.Dropout(dropout),
        torch.nn.Linear(hidden, classes),
    )
    m.forward = lambda x: m.classifier(torch.flatten(m.features(x), 1))
    return m


def names_in_order(m):
    """State-dict names in Go's model.Net.Params order: torchvision's, without num_batches_tracked."""
    return [k for k in m.state_dict() if not k.endswith("num_batches_tracked")]


def load_formula(m, period=None):
    """Set every tensor from the internal/reftest formula; tensor k is the k-th state-dict entry.
    With period, element j takes the value of element j mod period."""
    sd = m.state_dict()
    names = names_in_order(m)
    with torch.no_grad():
        for k, name in enumerate(names):
            t = sd[name]
            n = t.numel()
            x = u(k, n) if period is None else u(k, min(n, period))[np.arange(n) % period]
            leaf = name.rsplit(".", 1)[1]
            if t.dim() >= 2:  # conv OIHW or linear [out, in]
                fan_in = int(np.prod(t.shape[1:]))
                v = x * math.sqrt(12.0) * math.sqrt(2.0 / fan_in)
            elif leaf in ("running_var",) or (leaf == "weight" and t.dim() == 1):
                v = 1.0 + 0.1 * x  # BatchNorm weight and running_var
            else:
                v = 0.01 * x  # biases, BatchNorm bias and running_mean
            t.copy_(torch.from_numpy(v.astype(np.float32)).reshape(t.shape))
    return names


def weights_sha256(m, names):
    """SHA-256 of the tensors in names order, each as little-endian float32 bytes in row-major order."""
    h = hashlib.sha256()
    sd = m.state_dict()
    for name in names:
        h.update(sd[name].detach().contiguous().numpy().astype("<f4").tobytes())
    return h.hexdigest()


def make_input(n, s, classes):
    x = u(1000, n * s * s * 3).astype(np.float32).reshape(n, s, s, 3)  # NHWC, as dataset.Batch
    y = np.arange(n) % classes
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).long()


def record(out, sums, prefix, m, init):
    """Classifier tensors in full; conv tensors: first 64 values, float64 sums of the tensor
    and of its change from init (in metadata: safetensors F64 would come back as float32)."""
    for name, t in m.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        t = t.detach().contiguous()
        if name.startswith("classifier."):
            out[f"{prefix}/{name}"] = t.clone()
        else:
            flat = t.reshape(-1)
            out[f"{prefix}/{name}/first64"] = flat[:64].clone()
            d = flat.double() - init[name].reshape(-1).double()
            sums[f"{prefix}/{name}"] = {
                "sum": float(flat.double().sum()),
                "delta_sum": float(d.sum()),
                "delta_abs_sum": float(d.abs().sum()),
            }


def make_pth(outdir):
    """torchrun/testdata/vgg11_s32.pth: a real torch.save'd vgg11 state dict (S=32, 3 classes,
    hidden 16) re-zipped with DEFLATE (a few tens of KB instead of 37 MB), holding the
    internal/reftest formula values with the flat index taken mod PTH_PERIOD; and
    vgg11_s32_logits.safetensors: its eval-mode logits on reftest.Input(4, 32)."""
    import zipfile

    m = make_model("vgg11", 16, 3, 32, 0.0)
    load_formula(m, PTH_PERIOD)
    os.makedirs(outdir, exist_ok=True)
    raw = os.path.join(outdir, "vgg11_s32.pth.raw")
    torch.save(m.state_dict(), raw)
    path = os.path.join(outdir, "vgg11_s32.pth")
    with zipfile.ZipFile(raw) as zin, zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    os.remove(raw)
    os.chmod(path + ".tmp", 0o644)
    os.replace(path + ".tmp", path)
    back = torch.load(path, weights_only=True)  # PyTorch reads the DEFLATE archive too
    sd = m.state_dict()
    assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    x, _ = make_input(4, 32, 3)
    m.eval()
    with torch.no_grad():
        logits = m.forward(x)
    lpath = os.path.join(outdir, "vgg11_s32_logits.safetensors")
    save_file({"logits": logits.contiguous()}, lpath + ".tmp",
              metadata={"torch_version": torch.__version__, "period": str(PTH_PERIOD),
                        "generator": "scripts/reference/make_fixture.py"})
    os.chmod(lpath + ".tmp", 0o644)
    os.replace(lpath + ".tmp", lpath)
    print(f"wrote {os.path.normpath(path)} ({os.path.getsize(path)} bytes) and {os.path.normpath(lpath)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--pth-dir", default=PTH_DIR, help="where to write torchrun's .pth fixture")
    args = ap.parse_args()
    make_pth(args.pth_dir)

    torch.use_deterministic_algorithms(True)
    c = CONFIG
    out, sums = {}, {}

    def fresh():
        m = make_model(c["model"], c["hidden"], c["classes"], c["image_size"], c["dropout"])
        names = load_formula(m)
        return m, names

    m, names = fresh()
    init = {k: v.clone() for k, v in m.state_dict().items()}
    init_sha = weights_sha256(m, names)
    x, y = make_input(c["batch"], c["image_size"], c["classes"])
    m.eval()
    with torch.no_grad():
        logits = m.forward(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
    out["logits"] = logits.clone()
    out["loss"] = loss.reshape(1).clone()

    def train(m, opt, steps):
        m.train()
        losses = []
        for _ in range(steps):
            opt.zero_grad()
            l = torch.nn.functional.cross_entropy(m.forward(x), y)
            l.backward()
            opt.step()
            losses.append(float(l.detach()))
        return losses

    s = c["sgd"]
    sgd_opts = dict(lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"], nesterov=s["nesterov"])
    m, _ = fresh()
    l1 = train(m, torch.optim.SGD(m.parameters(), **sgd_opts), 1)
    record(out, sums, "sgd1", m, init)
    out["sgd1/loss"] = torch.tensor(l1, dtype=torch.float32)

    m, _ = fresh()
    l2 = train(m, torch.optim.SGD(m.parameters(), **sgd_opts), 2)
    record(out, sums, "sgd2", m, init)
    out["sgd2/loss"] = torch.tensor(l2, dtype=torch.float32)

    a = c["adam"]
    m, _ = fresh()
    la = train(m, torch.optim.Adam(m.parameters(), lr=a["lr"], betas=tuple(a["betas"]), eps=a["eps"],
                                   weight_decay=a["weight_decay"]), 1)
    record(out, sums, "adam1", m, init)
    out["adam1/loss"] = torch.tensor(la, dtype=torch.float32)

    # BatchNorm model.
    b = BN_CONFIG
    mb = make_model(b["model"], b["hidden"], b["classes"], b["image_size"], b["dropout"])
    bn_names = load_formula(mb)
    bn_init_sha = weights_sha256(mb, bn_names)
    xb, yb = make_input(b["batch"], b["image_size"], b["classes"])
    mb.eval()
    with torch.no_grad():
        out["bn/logits_eval"] = mb.forward(xb).clone()
    mb.train()
    opt = torch.optim.SGD(mb.parameters(), **sgd_opts)
    opt.zero_grad()
    lb = torch.nn.functional.cross_entropy(mb.forward(xb), yb)
    lb.backward()
    opt.step()
    out["bn/sgd1/loss"] = lb.detach().reshape(1).clone()
    sd = mb.state_dict()
    out["bn/sgd1/features.1.running_mean"] = sd["features.1.running_mean"].clone()
    out["bn/sgd1/features.1.running_var"] = sd["features.1.running_var"].clone()
    out["bn/sgd1/features.1.weight"] = sd["features.1.weight"].clone()
    out["bn/sgd1/classifier.6.weight"] = sd["classifier.6.weight"].clone()

    meta = {
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python": sys.version.split()[0],
        "torch_threads": str(torch.get_num_threads()),
        "config": json.dumps(c, sort_keys=True),
        "bn_config": json.dumps(b, sort_keys=True),
        "names": json.dumps(names),
        "bn_names": json.dumps(bn_names),
        "sums": json.dumps(sums, sort_keys=True),
        "weights_sha256": init_sha,
        "bn_weights_sha256": bn_init_sha,
        "input_sha256": hashlib.sha256(x.permute(0, 2, 3, 1).contiguous().numpy().astype("<f4").tobytes()).hexdigest(),
        "generator": "scripts/reference/make_fixture.py",
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    save_file({k: v.contiguous() for k, v in out.items()}, tmp, metadata=meta)
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.out)
    print(f"wrote {os.path.normpath(args.out)} ({os.path.getsize(args.out)} bytes): loss {float(loss):.6f}, "
          f"sgd losses {l2}, adam loss {la}, bn loss {float(lb.detach()):.6f}")


if __name__ == "__main__":
    main()
