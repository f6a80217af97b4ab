"""Shared helpers of the Python reference runs (torch_train.py, keras_train.py).

They read what scripts/bench/export wrote (batches exported by Go's dataset package,
initial weights from weights.InitParams, the dropout masks of model.DropoutMask, a manifest
with hashes), check every byte against the hashes Go computed, and write run records with
the fields of `fwbench train --json` (compare.RunRecord, schema fwbench.run/v1) plus
"driver": "python".
"""

import hashlib
import json
import os
import platform
import sys

import numpy as np

# The VGG configuration table of package vgg (torchvision's cfgs["D"]): channels, or "M" for
# a 2×2 max pool. Layer indices in torchvision's features Sequential follow from it:
# conv i, ReLU i+1, pool one index.
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def features_layout(cfg=VGG16):
    """Yields (index, kind, channels) as torchvision numbers features.N (kind "conv" or "pool")."""
    i = 0
    for v in cfg:
        if v == "M":
            yield i, "pool", None
            i += 1
        else:
            yield i, "conv", v
            i += 2  # Conv2d, ReLU


def batch_hash(x, labels):
    """dataset.Batch.Hash: SHA-256 of X as little-endian float32 bytes, then the labels as
    little-endian int32 bytes (dataset/batch.go)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(labels, dtype="<i4").tobytes())
    return h.hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_export(folder, steps):
    """Returns (manifest, batches, weights, weights_sha256). batches is a list of (x NHWC
    float32, labels int32); every batch's hash and the weights file's hash are checked
    against the manifest that Go wrote."""
    from safetensors.numpy import load_file

    with open(os.path.join(folder, "manifest.json")) as f:
        man = json.load(f)
    if steps > len(man["batches"]):
        sys.exit(f"reference: {steps} steps wanted, the export holds {len(man['batches'])} batches")
    batches = []
    for i in range(steps):
        with np.load(os.path.join(folder, man["batches"][i])) as z:
            x, y = z["x"], z["labels"]
        if x.dtype != np.float32 or y.dtype != np.int32:
            sys.exit(f"reference: batch {i}: dtypes {x.dtype}/{y.dtype}, want float32/int32")
        got = batch_hash(x, y)
        if got != man["batch_sha256"][i]:
            sys.exit(f"reference: batch {i}: sha256 {got}, want {man['batch_sha256'][i]} (from Go)")
        batches.append((x, y))
    wpath = os.path.join(folder, man["weights"])
    wsum = file_sha256(wpath)
    if wsum != man["weights_sha256"]:
        sys.exit(f"reference: {wpath}: sha256 {wsum}, want {man['weights_sha256']}")
    return man, batches, load_file(wpath), wsum


def load_masks(folder, man, steps, dropout):
    """The dropout masks the Go drivers use (model.DropoutMask, written by the exporter): for
    each of the first `steps` steps a float32 array [2, batch, hidden] (layer 0, layer 1),
    each file checked against the SHA-256 in the manifest. None when dropout is 0. The
    run's --dropout must be the exporter's: the masks are drawn for that probability."""
    if dropout != man.get("dropout"):
        sys.exit(f"reference: --dropout {dropout}, the export's masks are for {man.get('dropout')}")
    if dropout == 0:
        return None
    names, sums = man.get("dropout_masks") or [], man.get("dropout_sha256") or []
    if steps > len(names):
        sys.exit(f"reference: {steps} steps wanted, the export holds {len(names)} dropout masks")
    want = (2, man["batch_size"], man["hidden"])
    masks = []
    for i in range(steps):
        path = os.path.join(folder, names[i])
        got = file_sha256(path)
        if got != sums[i]:
            sys.exit(f"reference: {path}: sha256 {got}, want {sums[i]} (from Go)")
        m = np.load(path)
        if m.dtype != np.float32 or m.shape != want:
            sys.exit(f"reference: {path}: {m.dtype} {m.shape}, want float32 {want}")
        masks.append(m)
    return masks


def proc_status_bytes(key):
    """VmHWM / VmRSS of this process in bytes, as compare.PeakRSS reads them."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def quantile(xs, q):
    """compare.quantile: linear interpolation (numpy's default)."""
    return float(np.quantile(np.asarray(xs, dtype=np.float64), q)) if xs else 0.0


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def minor_faults():
    """Minor page faults of this process so far (pages touched for the first time)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def make_record(*, framework, version, threads, man, args, initial_loss, losses, step_times,
                total_seconds, weights_sha, settings, faults_per_step=None):
    """A run record with the fields of compare.RunRecord (fwbench.run/v1) and driver "python".
    Step times and throughput cover the steps after warm-up; batches are in memory before
    the clock starts, so data_wait_fraction is 0 by construction."""
    timed = step_times[args.warmup_steps:]
    bs = man["batch_size"]
    ips = len(timed) * bs / sum(timed) if timed else 0.0
    train_loss = float(np.mean(losses)) if losses else 0.0
    return {
        "schema": "fwbench.run/v1",
        "driver": "python",
        "framework": framework,
        "framework_version": version,
        "device": "cpu",
        "threads": threads,
        "model": man["model"],
        "mode": man["mode"],
        "image_size": man["image_size"],
        "batch_size": bs,
        "optimizer": "sgd",
        "lr": args.lr,
        "seed": man["seed"],
        "hidden": man["hidden"],
        "dataset": {"path": man["data"], "classes": man["classes"], "train_images": len(losses) * bs, "val_images": 0},
        "initial_loss": initial_loss,
        "epochs": [{"epoch": 1, "train_loss": train_loss, "train_accuracy": 0, "val_loss": 0, "val_accuracy": 0,
                    "seconds": sum(step_times), "images_per_second": ips}],
        "total_seconds": total_seconds,
        "warmup_steps": args.warmup_steps,
        "step_seconds": {"p50": quantile(timed, 0.5), "p95": quantile(timed, 0.95)},
        "images_per_second": ips,
        "data_wait_fraction": 0.0,
        "peak_rss_bytes": proc_status_bytes("VmHWM:"),
        "step_times_seconds": timed,
        "step_losses": losses,
        "minor_faults_per_step": faults_per_step,
        "first_batch_sha256": man["batch_sha256"][0],
        "initial_weights_sha256": weights_sha,
        "pid": os.getpid(),
        "settings": {k: str(v) for k, v in settings.items()},
    }


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def common_args(p):
    p.add_argument("--export", required=True, help="folder written by scripts/bench/export")
    p.add_argument("--steps", type=int, required=True, help="training steps (warm-up included)")
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--interop-threads", type=int, default=0, help="0: same as --threads")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--json", help="write the run record here")
    p.add_argument("--profile", help="profile one extra step after the run; write a per-op-class split here")
    return p
