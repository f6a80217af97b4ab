#!/usr/bin/env python3
"""Make the torchvision-architecture weight-file fixtures of package weights (weights/testdata/).

Run from the repository root with the project's Python reference environment (torch,
numpy, safetensors) and Go on PATH (`. scripts/env.sh`):

    ~/.cache/fwbench/pyref/bin/python scripts/reference/make_weights_fixtures.py

Two models with torchvision's VGG architecture and state-dict names (torchvision 0.26's
torchvision.models.vgg, rebuilt here so that torchvision need not be installed): vgg16
and vgg16_bn, features exactly as torchvision's make_layers, avgpool
AdaptiveAvgPool2d((7, 7)), classifier Linear(25088, 16), ReLU, Dropout, Linear(16, 16),
ReLU, Dropout, Linear(16, 1000). Every float tensor holds the internal/reftest formula
(make_fixture.py's load_formula) with element j taking the value of element j mod 1009, so
that the files compress. Each fixture is stored gzip-compressed twice (NAME.gz.gz, see
README.md: one DEFLATE pass cannot code a 258-byte match in under about 15 bits, so a
60 MB periodic file stays at 440 KB; the second pass shrinks that repetitive stream about 5
times). Written under weights/testdata/:

  vgg16.pth.gz.gz              torch.save(vgg16 state dict), zip format
  vgg16_bn.pth.gz.gz           the same for vgg16_bn (int64 num_batches_tracked = 0)
  vgg16_legacy.pth.gz.gz       vgg16, torch.save(..., _use_new_zipfile_serialization=False)
  vgg16_bn_legacy.pth.gz.gz    vgg16_bn, legacy format
  vgg16_module.pth.gz.gz       nn.DataParallel(vgg16).state_dict(): every name "module."-prefixed
  vgg16_checkpoint.pth.gz.gz   {epoch, model_state_dict, optimizer_state_dict, loss, global_step
                               (int64 tensor), rng_state (uint8 tensor), args (nested dict, list)}
  vgg16_bn.safetensors.gz.gz   safetensors.torch.save_file(vgg16_bn state dict): I64 num_batches_tracked
  vgg16_partial.safetensors.gz.gz  vgg16 without 16 of its 26 base tensors (features.12 on)
  tiny_vgg_legacy.pth          make_pth_fixture.py's tiny_vgg, legacy format (uncompressed, 7 KB)
  vgg16_tv_logits.safetensors  eval-mode logits [4, 1000] of "vgg16" and "vgg16_bn" on the
                               reference input (make_fixture.py's make_input(4, 32, 3), NHWC
                               formula permuted to NCHW)
  vgg16_fixtures.json          per fixture: format, tensor count and the CanonicalSHA256 (see
                               weights.CanonicalSHA256) of what weights.Load must return
  vgg16_bn_go.pth.gz.gz        written by Go (weights.WritePth of vgg16_bn.pth's tensors, through
                               `go test ./weights -run '^TestWritePthGolden$' -update`); this script
                               then checks it with torch and records the check in the JSON

With --check-golden only the last step runs (after a Go change re-made the golden file).
"""

import argparse
import copy
import gzip
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
from collections import OrderedDict

import torch
from safetensors.torch import save as st_save
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixture import CFGS, PTH_PERIOD, load_formula, make_input  # noqa: E402
from make_pth_fixture import tiny_vgg  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "weights", "testdata")
HIDDEN, CLASSES, BATCH, SIZE = 16, 1000, 4, 32
GOLDEN = "vgg16_bn_go.pth"
JSON = "vgg16_fixtures.json"
LOGITS = "vgg16_tv_logits.safetensors"
nn = torch.nn


class TorchvisionVGG(nn.Module):
    """torchvision.models.vgg.VGG with a hidden width of HIDDEN: same modules, names and forward."""

    def __init__(self, name):
        super().__init__()
        bn = name.endswith("_bn")
        layers, c = [], 3
        for v in CFGS[name.removesuffix("_bn")]:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers.append(nn.Conv2d(c, v, kernel_size=3, padding=1))
            if bn:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, HIDDEN), nn.ReLU(True), nn.Dropout(p=0.5),
            nn.Linear(HIDDEN, HIDDEN), nn.ReLU(True), nn.Dropout(p=0.5),
            nn.Linear(HIDDEN, CLASSES),
        )

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def model(name):
    m = TorchvisionVGG(name)
    load_formula(m, PTH_PERIOD)
    return m.eval()


def float_items(sd):
    """The tensors weights.Load returns: floating point ones (num_batches_tracked is skipped)."""
    return OrderedDict((k, v) for k, v in sd.items() if v.is_floating_point())


def canonical_sha256(sd):
    """weights.CanonicalSHA256 of a dict of float tensors (see its doc comment)."""
    h = hashlib.sha256()
    for name in sorted(sd):
        t, b = sd[name], name.encode()
        h.update(struct.pack("<I", len(b)) + b + struct.pack(f"<I{t.dim()}q", t.dim(), *t.shape))
        h.update(t.detach().float().contiguous().numpy().astype("<f4").tobytes())
    return h.hexdigest()


def gz2(data):
    """gzip twice, deterministically (no name, mtime 0)."""
    return gzip.compress(gzip.compress(data, 9, mtime=0), 9, mtime=0)


def write(name, data):
    path = os.path.join(OUT, name)
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.chmod(path + ".tmp", 0o644)
    os.replace(path + ".tmp", path)
    return os.path.getsize(path)


def saved(obj, legacy=False):
    b = io.BytesIO()
    torch.save(obj, b, _use_new_zipfile_serialization=not legacy)
    return b.getvalue()


def same(a, b):
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def logits_of(m, x):
    with torch.no_grad():
        return m.eval()(x).contiguous()


def check_golden(want_logits):
    """torch reads the Go-written file with weights_only=True, loads it strictly into
    vgg16_bn and computes the same logits as the original state dict."""
    path = os.path.join(OUT, GOLDEN + ".gz.gz")
    raw = gzip.decompress(gzip.decompress(open(path, "rb").read()))
    sd = torch.load(io.BytesIO(raw), weights_only=True)
    ref = float_items(model("vgg16_bn").state_dict())
    assert list(sd) == list(ref), "golden: names or order differ from the state dict's float tensors"
    assert all(sd[k].dtype == torch.float32 and torch.equal(sd[k], ref[k]) for k in ref), "golden: values differ"
    with tempfile.TemporaryDirectory() as d:  # mmap reads the storages in place: they must be aligned
        p = os.path.join(d, GOLDEN)
        open(p, "wb").write(raw)
        mm = torch.load(p, mmap=True, weights_only=True)
        assert same(mm, sd), "golden: torch.load(mmap=True) reads other tensors"
    m = TorchvisionVGG("vgg16_bn")
    res = m.load_state_dict(sd, strict=True)
    got = logits_of(m, make_input(BATCH, SIZE, 3)[0])
    diff = float((got - want_logits).abs().max())
    assert torch.equal(got, want_logits), f"golden: logits differ by up to {diff}"
    msg = (f"{GOLDEN} (Go WritePth): torch {torch.__version__} torch.load(weights_only=True) ok, with mmap=True too, "
           f"{len(sd)} float32 tensors equal to vgg16_bn's, load_state_dict(strict=True) ok "
           f"({res}), eval logits equal to the original state dict's (max |diff| {diff})")
    print(msg)
    return {"file": GOLDEN + ".gz.gz", "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(), "check": msg}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check-golden", action="store_true", help="only check the Go-written golden file")
    ap.add_argument("--no-go", action="store_true", help="do not run go test -update to re-make the golden file")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    x, y = make_input(BATCH, SIZE, 3)
    jpath = os.path.join(OUT, JSON)

    if args.check_golden:
        meta = json.load(open(jpath))
        from safetensors.torch import load_file
        meta["golden"] = check_golden(load_file(os.path.join(OUT, LOGITS))["vgg16_bn"])
        write(JSON, (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
        return

    fixtures, models, logits = {}, {}, {}
    for name in ("vgg16", "vgg16_bn"):
        m = model(name)
        sd = m.state_dict()
        fl = float_items(sd)
        logits[name] = logits_of(m, x)
        models[name] = {"float_tensors": len(fl), "canonical_sha256": canonical_sha256(fl),
                        "logits": f"{LOGITS}:{name}"}

        def add(file, fmt, data, want, loaded=None, **extra):
            back = torch.load(io.BytesIO(data), weights_only=True) if loaded is None else loaded
            assert same(back if want is None else want(back), sd), f"{file}: torch reads back other tensors"
            fixtures[file + ".gz.gz"] = dict(model=name, format=fmt, bytes=len(data), tensors=len(fl),
                                            canonical_sha256=models[name]["canonical_sha256"],
                                            compressed_bytes=write(file + ".gz.gz", gz2(data)), **extra)

        add(f"{name}.pth", "torch .pth (zip)", saved(sd), None)
        add(f"{name}_legacy.pth", "torch .pth (legacy)", saved(sd, legacy=True), None)
        if name == "vgg16_bn":
            data = st_save(dict(sd))
            from safetensors.torch import load as st_load
            back = st_load(data)
            assert back["features.1.num_batches_tracked"].dtype == torch.int64
            add(f"{name}.safetensors", "safetensors", data, None, loaded=OrderedDict((k, back[k]) for k in sd))
            continue
        # vgg16 only: DataParallel prefix, a training checkpoint, a partial file.
        dp = nn.DataParallel(m).state_dict()
        assert all(k.startswith("module.") for k in dp)
        add("vgg16_module.pth", "torch .pth (zip)", saved(dp),
            lambda b: OrderedDict((k.removeprefix("module."), v) for k, v in b.items()),
            note="every name has DataParallel's module. prefix; Load strips it")
        # One SGD-momentum step on a copy whose base is frozen (so that the momentum buffers,
        # the classifier's gradients, are small and compress); the checkpoint keeps the
        # unchanged model tensors so that the test compares them with vgg16.pth.
        m2 = copy.deepcopy(m)
        m2.features.requires_grad_(False)
        opt = torch.optim.SGD(m2.parameters(), lr=0.01, momentum=0.9)
        loss = nn.functional.cross_entropy(m2.eval()(x), y)
        loss.backward()
        opt.step()
        ckpt = {"epoch": 3, "model_state_dict": sd, "optimizer_state_dict": opt.state_dict(),
                "loss": float(loss.detach()), "global_step": torch.tensor(1, dtype=torch.int64),
                "rng_state": torch.get_rng_state(),
                "args": {"arch": "vgg16", "lr": 0.01, "milestones": [30, 60], "nested": {"betas": (0.9, 0.999)}}}
        add("vgg16_checkpoint.pth", "torch .pth (zip)", saved(ckpt), lambda b: b["model_state_dict"],
            note="training checkpoint; the state dict is under model_state_dict, the optimizer "
                 "state holds momentum buffers of the 6 classifier tensors")
        base = [k for k in fl if k.startswith("features.")]
        assert len(base) == 26
        keep = OrderedDict((k, v) for k, v in fl.items() if k not in base[10:])
        data = st_save(dict(keep))
        fixtures["vgg16_partial.safetensors.gz.gz"] = dict(
            model=name, format="safetensors", bytes=len(data), tensors=len(keep),
            canonical_sha256=canonical_sha256(keep), missing=base[10:],
            compressed_bytes=write("vgg16_partial.safetensors.gz.gz", gz2(data)),
            note="vgg16 without 16 of its 26 base tensors (features.12 to features.28)")

    # The tiny legacy file: small enough to commit as it is and to seed the fuzzer.
    tiny = tiny_vgg()
    data = saved(tiny, legacy=True)
    assert same(torch.load(io.BytesIO(data), weights_only=True), tiny)
    fixtures["tiny_vgg_legacy.pth"] = dict(model="tiny_vgg (make_pth_fixture.py)", format="torch .pth (legacy)",
                                           bytes=write("tiny_vgg_legacy.pth", data), tensors=len(float_items(tiny)),
                                           canonical_sha256=canonical_sha256(float_items(tiny)))

    save_file({k: v for k, v in logits.items()}, os.path.join(OUT, LOGITS + ".tmp"),
              metadata={"torch_version": torch.__version__, "generator": "scripts/reference/make_weights_fixtures.py",
                        "input": "make_fixture.make_input(4, 32, 3): flat NHWC element j = float32(u(1000, j)), "
                                 "permuted to NCHW",
                        "model": "torchvision VGG, avgpool AdaptiveAvgPool2d((7, 7)), hidden 16, 1000 classes, eval"})
    os.chmod(os.path.join(OUT, LOGITS + ".tmp"), 0o644)
    os.replace(os.path.join(OUT, LOGITS + ".tmp"), os.path.join(OUT, LOGITS))

    meta = {"generator": "scripts/reference/make_weights_fixtures.py", "torch_version": torch.__version__,
            "period": PTH_PERIOD, "hidden": HIDDEN, "classes": CLASSES, "models": models, "fixtures": fixtures,
            "compression": "gzip twice (NAME.gz.gz)"}
    write(JSON, (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
    for f, d in sorted(fixtures.items()):
        print(f"{f}: {d['format']}, {d['tensors']} tensors, {d['bytes']} bytes -> "
              f"{d.get('compressed_bytes', d['bytes'])} in the repository, sha {d['canonical_sha256'][:16]}")

    if not args.no_go:
        subprocess.run(["go", "test", "./weights", "-run", "^TestWritePthGolden$", "-count=1", "-update"],
                       cwd=ROOT, check=True)
    if os.path.exists(os.path.join(OUT, GOLDEN + ".gz.gz")):
        meta["golden"] = check_golden(logits["vgg16_bn"])
        write(JSON, (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())


if __name__ == "__main__":
    main()
