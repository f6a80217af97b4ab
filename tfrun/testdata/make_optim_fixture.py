#!/usr/bin/env python3
"""Make tfrun's optimizer fixture: tfrun/testdata/optim_vgg11_s32.safetensors.

The shared fixture (scripts/reference/make_fixture.py) covers one and two SGD
steps without Nesterov and one Adam step without weight decay. This one adds
what tfrun reconciles by formula and the shared fixture does not reach:
Nesterov momentum, Adam's bias correction after step 1, and Adam with L2
weight decay. It reuses make_fixture.py's model, formula weights and input
(internal/reftest), so Go starts from the same bytes.

    /root/.cache/fwbench/pyref/bin/python tfrun/testdata/make_optim_fixture.py

Configuration: vgg11 at S = 32, 3 classes, hidden 16, dropout 0, batch 4,
float32, CPU. Runs, each from the formula weights, two steps on the same batch:

  nesterov/  SGD lr 0.01, momentum 0.9, weight decay 5e-4, nesterov
  adamwd/    Adam lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 5e-4

Keys as in the shared fixture: <run>/loss [2], <run>/classifier.* in full,
<run>/features.N.*/first64, and the float64 sums of every conv tensor's
change in __metadata__["sums"].
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # leave scripts/reference as it is
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts", "reference"))
import make_fixture as mf  # noqa: E402

OUT = os.path.join(HERE, "optim_vgg11_s32.safetensors")
CONFIG = {"model": "vgg11", "image_size": 32, "classes": 3, "hidden": 16, "dropout": 0.0, "batch": 4, "steps": 2,
          "nesterov": {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
          "adamwd": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 5e-4}}


def main():
    torch.use_deterministic_algorithms(True)
    c = CONFIG
    x, y = mf.make_input(c["batch"], c["image_size"], c["classes"])
    out, sums, init_sha = {}, {}, None
    for run, make_opt in [("nesterov", lambda p: torch.optim.SGD(p, **c["nesterov"])),
                          ("adamwd", lambda p: torch.optim.Adam(p, lr=c["adamwd"]["lr"], betas=tuple(c["adamwd"]["betas"]),
                                                                eps=c["adamwd"]["eps"], weight_decay=c["adamwd"]["weight_decay"]))]:
        m = mf.make_model(c["model"], c["hidden"], c["classes"], c["image_size"], c["dropout"])
        names = mf.load_formula(m)
        init_sha = mf.weights_sha256(m, names)
        init = {k: v.clone() for k, v in m.state_dict().items()}
        opt = make_opt(m.parameters())
        m.train()
        losses = []
        for _ in range(c["steps"]):
            opt.zero_grad()
            l = torch.nn.functional.cross_entropy(m.forward(x), y)
            l.backward()
            opt.step()
            losses.append(float(l.detach()))
        mf.record(out, sums, run, m, init)
        out[f"{run}/loss"] = torch.tensor(losses, dtype=torch.float32)
    meta = {"config": json.dumps(c, sort_keys=True), "sums": json.dumps(sums, sort_keys=True),
            "weights_sha256": init_sha, "torch_version": torch.__version__,
            "torch_threads": str(torch.get_num_threads()), "generator": "tfrun/testdata/make_optim_fixture.py"}
    tmp = OUT + ".tmp"
    save_file({k: v.contiguous() for k, v in out.items()}, tmp, metadata=meta)
    os.chmod(tmp, 0o644)
    os.replace(tmp, OUT)
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
