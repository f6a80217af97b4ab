#!/usr/bin/env python3
"""Make package keras's fixtures: Keras weight files (HDF5) in keras/testdata.

Run with the project's Python reference environment (torch, tensorflow-cpu with Keras 3,
h5py, numpy, safetensors):

    /root/.cache/fwbench/pyref/bin/python scripts/reference/make_keras_fixtures.py
    /root/.cache/fwbench/pyref/bin/python scripts/reference/make_keras_fixtures.py --check-export

Every fixture holds VGG16 (hidden width 16, 3 classes) with the internal/reftest formula
in canonical (torchvision) layout, element j taking the value of element j mod 1009 so
that gzip shrinks the files (make_fixture.load_formula with period 1009; tensor k is the
k-th entry of Go's model.Build(model.Spec{vgg16, head, S, 3, 16}).Params). The script converts the canonical
tensors to Keras' layouts with numpy, writes the files, has Keras load them, and checks
Keras' eval-mode logits on the reftest input against PyTorch's on the canonical tensors.
The files are stored gzipped; each has a sidecar <stem>.expect.safetensors with the Keras
logits and, in its metadata, the canonical names and hashes that keras.Read must give.

The default run also checks the export golden file that `go test ./keras -run Golden
-args -update` writes (keras.WriteWeightsH5 output), when it exists: Keras'
model.load_weights reads it into keras_model and must give PyTorch's logits.
--check-export does only that. See scripts/reference/README.md.
"""

import argparse
import gzip
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixture import load_formula, make_input, make_model  # noqa: E402
from make_head_fixture import make_head_model  # noqa: E402

import keras  # noqa: E402  (after torch: both load their own native libraries)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "keras", "testdata")
PERIOD = 1009
HIDDEN, CLASSES, BATCH = 16, 3, 4
EXPORT = "export_vgg16_flatten_s64.weights.h5.gz"  # written by keras' Go test
EXPORT_CONFIG = {"image_size": 64, "head": "flatten"}


def keras_model(image_size, head, hidden=HIDDEN, classes=CLASSES, sequential=False):
    """The Keras model of every fixture and of keras.WriteWeightsH5's output: VGG16's base
    (keras.applications, include_top=False) and, unless head is None, Flatten then
    head "keras":   Dense(hidden, relu), Dropout(0.5), Dense(classes)
    head "flatten": Dense(hidden, relu), Dropout(0.5), Dense(hidden, relu), Dropout(0.5), Dense(classes)
    (logits, no softmax) as one functional model, or with sequential=True as
    keras.Sequential([base, Flatten(), ...]), which Keras 3 stores one level deeper."""
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    if head is None:
        return base
    layers = [keras.layers.Flatten(), keras.layers.Dense(hidden, activation="relu"), keras.layers.Dropout(0.5)]
    if head == "flatten":
        layers += [keras.layers.Dense(hidden, activation="relu"), keras.layers.Dropout(0.5)]
    elif head != "keras":
        raise ValueError(head)
    layers.append(keras.layers.Dense(classes))
    if sequential:
        return keras.Sequential([base] + layers)
    x = base.output
    for layer in layers:
        x = layer(x)
    return keras.Model(base.input, x)


def torch_model(image_size, head):
    """The same network in PyTorch (make_fixture's VGG16 base), formula weights with PERIOD."""
    if head == "flatten":
        m = make_model("vgg16", HIDDEN, CLASSES, image_size, 0.0)
    else:
        m = make_head_model("vgg16", head, HIDDEN, CLASSES, image_size, 0.0)
    load_formula(m, PERIOD)
    m.eval()
    return m


def canonical(m):
    """The state dict as float32 numpy arrays, in order (no BatchNorm here)."""
    return {k: v.detach().contiguous().numpy().astype(np.float32) for k, v in m.state_dict().items()}


def to_keras(ts, image_size):
    """Canonical tensors -> Keras arrays in model order: conv OIHW -> HWIO; linear [out, in] ->
    [in, out], the first one's input rows from torch's C×H×W flattening to Keras' H×W×C."""
    out, first = [], True
    for name, t in ts.items():
        if t.ndim == 4:
            out.append(t.transpose(2, 3, 1, 0))
        elif t.ndim == 2 and first:
            s = image_size // 32
            out.append(t.reshape(t.shape[0], 512, s, s).transpose(2, 3, 1, 0).reshape(s * s * 512, t.shape[0]))
            first = False
        elif t.ndim == 2:
            out.append(t.T)
        else:
            out.append(t)
    return [np.ascontiguousarray(a) for a in out]


def canonical_sha256(ts):
    """weights.CanonicalSHA256: tensors sorted by name; per tensor uint32 LE name length,
    the name, uint32 LE ndim, int64 LE dims, float32 LE data."""
    h = hashlib.sha256()
    for name in sorted(ts):
        t = ts[name]
        b = name.encode()
        h.update(struct.pack("<I", len(b)) + b + struct.pack("<I", t.ndim))
        h.update(b"".join(struct.pack("<q", d) for d in t.shape))
        h.update(t.astype("<f4").tobytes())
    return h.hexdigest()


def keras_input(image_size):
    x, _ = make_input(BATCH, image_size, CLASSES)  # NCHW torch tensor from the NHWC formula batch
    return x, x.permute(0, 2, 3, 1).contiguous().numpy()


def torch_logits(m, x):
    with torch.no_grad():
        return m.forward(x).numpy()


def check_close(what, got, want):
    d = float(np.max(np.abs(got - want)))
    ok = np.allclose(got, want, rtol=1e-4, atol=1e-5)
    print(f"{what}: Keras vs PyTorch logits, max |diff| {d:.3g} {'ok' if ok else 'MISMATCH'}")
    if not ok:
        sys.exit(f"{what}: Keras logits {got.tolist()} differ from PyTorch's {want.tolist()}")
    return d


def write_keras2(path, layers):
    """A Keras 2 weight file as the original keras.applications files are laid out (Keras
    1.2's save_weights_to_hdf5_group with h5py): a root attribute layer_names (fixed-length
    byte strings), one group per layer with weight_names (byte strings, or an empty float64
    array for a layer without weights) and its weights as contiguous datasets directly in
    the group, named after the TensorFlow variables (block1_conv1_W_1:0)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [name.encode("utf8") for name, _ in layers]
        for name, ws in layers:
            g = f.create_group(name)
            g.attrs["weight_names"] = [wn.encode("utf8") for wn, _ in ws]
            for wn, val in ws:
                d = g.create_dataset(wn, val.shape, dtype=val.dtype)
                d[:] = val


def keras2_layers(arrays, top):
    """Layer names and weights of keras.applications' VGG16 (Keras 1.2 naming)."""
    it = iter(arrays)
    layers = [("input_1", [])]
    for block, convs in enumerate([2, 2, 3, 3, 3], start=1):
        for c in range(1, convs + 1):
            n = f"block{block}_conv{c}"
            layers.append((n, [(f"{n}_W_1:0", next(it)), (f"{n}_b_1:0", next(it))]))
        layers.append((f"block{block}_pool", []))
    if top:
        layers.append(("flatten", []))
        for n in ["fc1", "fc2", "predictions"]:
            layers.append((n, [(f"{n}_W_1:0", next(it)), (f"{n}_b_1:0", next(it))]))
    assert next(it, None) is None
    return layers


def gzip_to(src, dst):
    with open(src, "rb") as f:
        data = f.read()
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(gzip.compress(data, 9, mtime=0))
    os.chmod(tmp, 0o644)
    os.replace(tmp, dst)
    return len(data)


def gunzip(src, dst):
    with gzip.open(src, "rb") as f, open(dst, "wb") as g:
        shutil.copyfileobj(f, g)


def versions():
    import tensorflow as tf

    return {
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "h5py_version": h5py.__version__,
        "hdf5_version": h5py.version.hdf5_version,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "generator": "scripts/reference/make_keras_fixtures.py",
    }


def save_sidecar(path, tensors, config, ts, diff):
    meta = dict(versions())
    meta.update({
        "config": json.dumps(config, sort_keys=True),
        "names": json.dumps(list(ts)),
        "shapes": json.dumps({k: list(v.shape) for k, v in ts.items()}),
        "canonical_sha256": canonical_sha256(ts),
        "tensor_sha256": json.dumps({k: hashlib.sha256(v.astype("<f4").tobytes()).hexdigest() for k, v in ts.items()}),
        "period": str(PERIOD),
        "torch_logits_max_abs_diff": f"{diff:.3g}",
    })
    tmp = path + ".tmp"
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, tmp, metadata=meta)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def make_keras2(out, work, top):
    """keras2_vgg16_{notop,full}_s32.h5: notop holds the base; full adds fc1, fc2 and
    predictions (the flatten head). The notop sidecar also holds a keras head (formula
    tensors 26..29 of model.Spec{vgg16, keras, 32, 3, 16}'s Params) so that base + head gives
    the logits."""
    S = 32
    head = "flatten" if top else "keras"
    tm = torch_model(S, head)
    full = canonical(tm)
    ts = full if top else {k: v for k, v in full.items() if k.startswith("features.")}
    stem = f"keras2_vgg16_{'full' if top else 'notop'}_s{S}"
    raw = os.path.join(work, stem + ".h5")
    arrays = to_keras(ts, S)
    write_keras2(raw, keras2_layers(arrays, top))

    # Keras loads it (its legacy .h5 loader, by topological order) into keras_model ...
    km = keras_model(S, head if top else None)
    km.load_weights(raw)
    got = km.get_weights()
    assert len(got) == len(arrays) and all(np.array_equal(a, b) for a, b in zip(got, arrays)), "Keras read other values"
    # ... and gives the same layer outputs as the same arrays set directly.
    x, xk = keras_input(S)
    direct = keras_model(S, head if top else None)
    direct.set_weights(arrays)
    assert np.array_equal(km(xk, training=False).numpy(), direct(xk, training=False).numpy())

    tensors = {}
    if top:
        logits = km(xk, training=False).numpy()
    else:
        withhead = keras_model(S, "keras")
        headts = {k: v for k, v in full.items() if k.startswith("classifier.")}
        withhead.set_weights(arrays + to_keras(headts, S))
        logits = withhead(xk, training=False).numpy()
        tensors.update(headts)
    diff = check_close(stem, logits, torch_logits(tm, x))
    tensors["logits"] = logits
    size = gzip_to(raw, os.path.join(out, stem + ".h5.gz"))
    config = {"model": "vgg16", "image_size": S, "hidden": HIDDEN, "classes": CLASSES, "batch": BATCH,
              "layout": "keras2", "head": head if top else None, "logits_head": head}
    save_sidecar(os.path.join(out, stem + ".expect.safetensors"), tensors, config, ts, diff)
    return stem, size


def make_keras3(out, work, sequential):
    """keras3_vgg16_keras_s64[_sequential].weights.h5: Keras' own save_weights of
    keras_model(64, "keras") (functional, or nested in keras.Sequential). At 64 px the
    base's output is 2×2×512, so the first Dense layer's rows are really permuted."""
    S, head = 64, "keras"
    tm = torch_model(S, head)
    ts = canonical(tm)
    km = keras_model(S, head, sequential=sequential)
    km.set_weights(to_keras(ts, S))
    stem = f"keras3_vgg16_{head}_s{S}" + ("_sequential" if sequential else "")
    raw = os.path.join(work, stem + ".weights.h5")
    km.save_weights(raw)
    back = keras_model(S, head, sequential=sequential)
    back.load_weights(raw)
    x, xk = keras_input(S)
    logits = back(xk, training=False).numpy()
    diff = check_close(stem, logits, torch_logits(tm, x))
    size = gzip_to(raw, os.path.join(out, stem + ".weights.h5.gz"))
    config = {"model": "vgg16", "image_size": S, "hidden": HIDDEN, "classes": CLASSES, "batch": BATCH,
              "layout": "keras3" + ("-sequential" if sequential else ""), "head": head, "logits_head": head}
    save_sidecar(os.path.join(out, stem + ".expect.safetensors"), {"logits": logits}, config, ts, diff)
    return stem, size


def check_export(out, work):
    """Load keras.WriteWeightsH5's golden file into keras_model and compare with PyTorch."""
    path = os.path.join(out, EXPORT)
    if not os.path.exists(path):
        print(f"{path}: not there yet (go test ./keras -run Golden -args -update writes it)")
        return False
    S, head = EXPORT_CONFIG["image_size"], EXPORT_CONFIG["head"]
    raw = os.path.join(work, EXPORT.removesuffix(".gz"))
    gunzip(path, raw)
    km = keras_model(S, head)
    km.load_weights(raw)
    tm = torch_model(S, head)
    x, xk = keras_input(S)
    check_close(f"{EXPORT} (written by keras.WriteWeightsH5)", km(xk, training=False).numpy(), torch_logits(tm, x))
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--check-export", action="store_true", help="only check the Go-written export golden file")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        if not args.check_export:
            made = [make_keras2(args.out, work, top=False), make_keras2(args.out, work, top=True),
                    make_keras3(args.out, work, sequential=False), make_keras3(args.out, work, sequential=True)]
            for stem, size in made:
                gz = [f for f in os.listdir(args.out) if f.startswith(stem + ".") and f.endswith(".gz")][0]
                print(f"wrote {os.path.normpath(os.path.join(args.out, gz))} "
                      f"({os.path.getsize(os.path.join(args.out, gz))} bytes, {size} unpacked) and {stem}.expect.safetensors")
        if not check_export(args.out, work) and args.check_export:
            sys.exit(1)


if __name__ == "__main__":
    main()
