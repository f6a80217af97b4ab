#!/usr/bin/env python3
"""Make the reference fixtures for package weights (weights/testdata/).

Run with the project's Python reference environment (torch + safetensors):

    /root/.cache/fwbench/pyref/bin/python scripts/reference/make_pth_fixture.py

It writes, under weights/testdata/:

  tiny_vgg.pth          a real torch.save'd state_dict of a tiny VGG-shaped
                        module (torchvision key names, BatchNorm with its
                        int64 num_batches_tracked); every float tensor k holds
                        k + i/1024 at flat index i, so the Go test can check
                        every value from that formula
  tiny_vgg.safetensors  the same float tensors written by the Python
                        safetensors package, with one __metadata__ key (one,
                        so that the Go writer's output can be compared with
                        it byte for byte)
  tiny_vgg_deflate.pth  tiny_vgg.pth re-zipped with DEFLATE entries
  views.pth             tensors that share one storage at offsets, a saved
                        nn.Parameter, float16, bfloat16 and float64 tensors
  wrapped.pth           {"epoch": 3, "state_dict": <state dict>}
  noncontig.pth         a transposed (non-contiguous) view: must be refused
  int32.pth             an int32 tensor: must be refused (unsupported dtype)
  dtypes.safetensors    F32, F16, BF16 and F64 tensors by Python safetensors
  int32.safetensors     an I32 tensor by Python safetensors
  evil_*.pth            torch-layout zips whose pickle calls a dangerous global
                        (os.system, posix.system, builtins.eval,
                        __builtin__.exec, subprocess.Popen, os.system via
                        STACK_GLOBAL); loaded by Python's unpickler each would
                        create the file "fwbench_pwned" in the working
                        directory, which this script checks (in a temporary
                        directory) unless --no-verify is given
  bad_truncated.pth     tiny_vgg.pth with data.pkl cut in half
  bad_opcode.pth        a pickle with an opcode byte that does not exist
  bad_storage.pth       tiny_vgg.pth with storage 0 shorter than declared

The fixtures are committed; rerun this script only to regenerate them.
"""

import os
import struct
import subprocess
import sys
import tempfile
import zipfile

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "weights", "testdata")
MARKER = "fwbench_pwned"


def tiny_vgg():
    """A module whose state_dict has torchvision VGG key names (vgg *_bn style):
    features.0 Conv2d(3,4), features.1 BatchNorm2d(4), [2 ReLU, 3 MaxPool],
    features.4 Conv2d(4,8); classifier.0 Linear(8,6), classifier.3 Linear(6,6),
    classifier.6 Linear(6,3)."""
    nn = torch.nn
    m = nn.Module()
    m.features = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    m.classifier = nn.Sequential(
        nn.Linear(8, 6), nn.ReLU(), nn.Dropout(), nn.Linear(6, 6), nn.ReLU(), nn.Dropout(),
        nn.Linear(6, 3))
    with torch.no_grad():
        k = 0
        for name, t in m.state_dict().items():
            if t.dtype != torch.float32:
                continue
            n = t.numel()
            t.copy_((k + torch.arange(n, dtype=torch.float32) / 1024).reshape(t.shape))
            k += 1
    m.features[1].num_batches_tracked.fill_(7)
    return m.state_dict()


def torch_zip(path, pkl, storages, prefix="archive", compression=zipfile.ZIP_STORED):
    """Write a zip in torch.save's layout around a hand-made pickle."""
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr(f"{prefix}/data.pkl", pkl)
        z.writestr(f"{prefix}/byteorder", "little")
        for key, data in storages.items():
            z.writestr(f"{prefix}/data/{key}", data)
        z.writestr(f"{prefix}/version", "3\n")


def rezip(src, dst, compression=zipfile.ZIP_STORED, edit=None):
    """Copy a torch zip entry by entry, optionally changing entries."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if edit:
                data = edit(info.filename, data)
            zout.writestr(info.filename, data, compress_type=compression)


def g(module, name):
    """GLOBAL opcode."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def s(text):
    """BINUNICODE opcode."""
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def evil_pickles():
    """Pickles that run code when loaded by Python's unrestricted unpickler.
    Each is a protocol-2 state dict {"features.0.weight": <call result>}."""
    touch = f"touch {MARKER}"
    calls = {
        "os_system": g("os", "system") + s(touch) + b"\x85R",
        "posix_system": g("posix", "system") + s(touch) + b"\x85R",
        "builtins_eval": g("builtins", "eval") + s(f"open({MARKER!r}, 'w').close()") + b"\x85R",
        # __builtin__ is Python 2's name; Python 3 maps it to builtins.
        "builtin_exec": g("__builtin__", "exec") + s(f"open({MARKER!r}, 'w').close()") + b"\x85R",
        "subprocess_popen": g("subprocess", "Popen")
        + b"(" + s("touch") + s(MARKER) + b"t" + b"\x85R",
        # protocol 4 STACK_GLOBAL: module and name come from the stack.
        "stack_global": b"\x8c\x02os\x8c\x06system\x93" + s(touch) + b"\x85R",
    }
    out = {}
    for name, call in calls.items():
        proto = b"\x80\x04" if name == "stack_global" else b"\x80\x02"
        out[name] = proto + b"}(" + s("features.0.weight") + call + b"u."
    return out


def verify_evil(pickles):
    """Check that each evil pickle really would run: load it with Python's
    pickle in a fresh temporary directory and look for the marker file."""
    for name, pkl in pickles.items():
        with tempfile.TemporaryDirectory() as d:
            code = "import pickle,sys,time; pickle.loads(sys.stdin.buffer.read()); time.sleep(0.2)"
            subprocess.run([sys.executable, "-c", code], input=pkl, cwd=d, check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if not os.path.exists(os.path.join(d, MARKER)):
                sys.exit(f"evil pickle {name}: Python's unpickler did not create the marker")
    print(f"verified: each of {len(pickles)} evil pickles runs code under pickle.loads")


def main():
    os.makedirs(OUT, exist_ok=True)
    p = lambda name: os.path.join(OUT, name)

    sd = tiny_vgg()
    torch.save(sd, p("tiny_vgg.pth"))
    floats = {k: v for k, v in sd.items() if v.dtype == torch.float32}
    save_file(floats, p("tiny_vgg.safetensors"), metadata={"source": "make_pth_fixture.py"})
    rezip(p("tiny_vgg.pth"), p("tiny_vgg_deflate.pth"), zipfile.ZIP_DEFLATED)
    torch.save({"epoch": 3, "state_dict": sd}, p("wrapped.pth"))

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    views = {
        "features.0.bias": base[1],            # storage offset 6, shape [6]
        "features.0.weight": base[2:4],        # storage offset 12, shape [2, 6]
        "classifier.0.weight": torch.nn.Parameter(torch.tensor([[0.5, -1.5], [2.25, 3.0]])),
        "half": torch.tensor([1.0, -2.5, 65504.0, 0.000061035156], dtype=torch.float16),
        "bf16": torch.tensor([1.0, -2.5, 3.140625], dtype=torch.bfloat16),
        "f64": torch.tensor([0.1, -7.0], dtype=torch.float64),
    }
    torch.save(views, p("views.pth"))
    torch.save({"features.0.weight": base.t()}, p("noncontig.pth"))
    torch.save({"features.0.weight": torch.arange(4, dtype=torch.int32)}, p("int32.pth"))

    save_file({
        "f32": torch.tensor([[1.0, -2.0, 0.1], [3.5, 1e-20, -0.0]], dtype=torch.float32),
        "f16": torch.tensor([1.0, -2.5, 65504.0, 0.000061035156, 5.960464477539063e-08], dtype=torch.float16),
        "bf16": torch.tensor([1.0, -2.5, 3.140625, 1e30], dtype=torch.bfloat16),
        "f64": torch.tensor([0.1, -7.0], dtype=torch.float64),
        "scalar": torch.tensor(42.0, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
    }, p("dtypes.safetensors"), metadata={"source": "make_pth_fixture.py"})
    save_file({"ints": torch.arange(3, dtype=torch.int32)}, p("int32.safetensors"))

    evil = evil_pickles()
    if "--no-verify" not in sys.argv:
        verify_evil(evil)
    for name, pkl in evil.items():
        torch_zip(p(f"evil_{name}.pth"), pkl, {})

    rezip(p("tiny_vgg.pth"), p("bad_truncated.pth"),
          edit=lambda n, d: d[: len(d) // 2] if n.endswith("/data.pkl") else d)
    torch_zip(p("bad_opcode.pth"), b"\x80\x02}\xff.", {})
    rezip(p("tiny_vgg.pth"), p("bad_storage.pth"),
          edit=lambda n, d: d[:8] if n.endswith("/data/0") else d)
    print("wrote fixtures to", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
