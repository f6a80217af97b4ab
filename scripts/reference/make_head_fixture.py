#!/usr/bin/env python3
"""Make fwbench's head reference fixture: testdata/reference/heads_s32.safetensors.

Run with the project's Python reference environment (torch + numpy + safetensors):

    /root/.cache/fwbench/pyref/bin/python scripts/reference/make_head_fixture.py

It builds VGG as make_fixture.py does, but with the VGG heads of package model other
than the default flatten head:

  torchvision: AdaptiveAvgPool2d((7, 7)) -> flatten -> Linear(25088, h) -> ReLU -> Dropout
               -> Linear(h, h) -> ReLU -> Dropout -> Linear(h, classes)   (classifier.0/3/6)
  keras:       flatten -> Linear(512*(S/32)^2, h) -> ReLU -> Dropout -> Linear(h, classes)
                                                                          (classifier.0/3)

sets every tensor from the internal/reftest formula (tensor k is the k-th entry of
Go's model.Build(model.Spec{model, head, S, classes, hidden}).Params), and records the eval-mode logits and
loss on the reftest input and the weights after one SGD step. See
scripts/reference/README.md for the keys.
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixture import load_formula, make_input, make_model, weights_sha256  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "testdata", "reference", "heads_s32.safetensors")

# The fixture's configuration (also recorded in __metadata__["config"]).
CONFIG = {
    "models": ["vgg11", "vgg11_bn"],
    "heads": ["torchvision", "keras"],
    "image_size": 32,
    "classes": 3,
    "hidden": 16,
    "dropout": 0.0,
    "batch": 4,
    "sgd": {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False, "dampening": 0.0},
    "dtype": "float32",
    "device": "cpu",
}
FULL_MAX = 16384  # updated classifier tensors up to this many elements are stored in full
STRIDE = 97  # larger ones (torchvision's classifier.0.weight, 16x25088) as every 97th element


def make_head_model(name, head, hidden, classes, image_size, dropout):
    """make_fixture.make_model's base with the given head."""
    m = make_model(name, hidden, classes, image_size, dropout)  # its features, in torchvision order
    nn = torch.nn
    if head == "torchvision":
        m.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        m.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )
        m.forward = lambda x: m.classifier(torch.flatten(m.avgpool(m.features(x)), 1))
    elif head == "keras":
        flat = 512 * (image_size // 32) ** 2
        m.classifier = nn.Sequential(
            nn.Linear(flat, hidden), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )
        m.forward = lambda x: m.classifier(torch.flatten(m.features(x), 1))
    else:
        raise ValueError(head)
    return m


def record(out, sums, prefix, m, init):
    """Classifier tensors in full up to FULL_MAX elements, else every STRIDE-th element
    (key suffix /stride97); other tensors: the first 64 values. For every tensor not stored
    in full, float64 sums of the tensor and of its change from init go to metadata."""
    for name, t in m.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        flat = t.detach().contiguous().reshape(-1)
        if name.startswith("classifier.") and flat.numel() <= FULL_MAX:
            out[f"{prefix}/{name}"] = t.detach().contiguous().clone()
            continue
        if name.startswith("classifier."):
            out[f"{prefix}/{name}/stride{STRIDE}"] = flat[::STRIDE].clone()
        else:
            out[f"{prefix}/{name}/first64"] = flat[:64].clone()
        d = flat.double() - init[name].reshape(-1).double()
        sums[f"{prefix}/{name}"] = {
            "sum": float(flat.double().sum()),
            "delta_sum": float(d.sum()),
            "delta_abs_sum": float(d.abs().sum()),
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    c = CONFIG
    s = c["sgd"]
    x, y = make_input(c["batch"], c["image_size"], c["classes"])
    out, sums, names, shas, summary = {}, {}, {}, {}, []
    for head in c["heads"]:
        for model in c["models"]:
            prefix = f"{head}/{model}"

            def fresh():
                m = make_head_model(model, head, c["hidden"], c["classes"], c["image_size"], c["dropout"])
                return m, load_formula(m)

            m, ns = fresh()
            names[prefix] = ns
            shas[prefix] = weights_sha256(m, ns)
            init = {k: v.clone() for k, v in m.state_dict().items()}
            m.eval()
            with torch.no_grad():
                logits = m.forward(x)
                loss = torch.nn.functional.cross_entropy(logits, y)
            out[f"{prefix}/logits"] = logits.clone()
            out[f"{prefix}/loss"] = loss.reshape(1).clone()

            m, _ = fresh()
            m.train()
            opt = torch.optim.SGD(m.parameters(), lr=s["lr"], momentum=s["momentum"],
                                  weight_decay=s["weight_decay"], nesterov=s["nesterov"])
            opt.zero_grad()
            l = torch.nn.functional.cross_entropy(m.forward(x), y)
            l.backward()
            opt.step()
            out[f"{prefix}/sgd1/loss"] = l.detach().reshape(1).clone()
            record(out, sums, f"{prefix}/sgd1", m, init)
            summary.append(f"{prefix}: loss {float(loss):.6f}, train loss {float(l.detach()):.6f}")

    meta = {
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python": sys.version.split()[0],
        "torch_threads": str(torch.get_num_threads()),
        "config": json.dumps(c, sort_keys=True),
        "names": json.dumps(names, sort_keys=True),
        "sums": json.dumps(sums, sort_keys=True),
        "weights_sha256": json.dumps(shas, sort_keys=True),
        "input_sha256": hashlib.sha256(x.permute(0, 2, 3, 1).contiguous().numpy().astype("<f4").tobytes()).hexdigest(),
        "stride": str(STRIDE),
        "generator": "scripts/reference/make_head_fixture.py",
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    save_file({k: v.contiguous() for k, v in out.items()}, tmp, metadata=meta)
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.out)
    print(f"wrote {os.path.normpath(args.out)} ({os.path.getsize(args.out)} bytes)")
    for line in summary:
        print(line)


if __name__ == "__main__":
    main()
