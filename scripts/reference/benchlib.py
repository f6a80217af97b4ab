"""Shared helpers of the Python reference runs (torch_train.py, keras_train.py).

They read what scripts/bench/export wrote (batches exported by Go's dataset package,
initial weights from weights.InitParams, the dropout masks of model.DropoutMask, the model
description net.json (model.Net's layer graph), a manifest with hashes), check every byte
against the hashes Go computed, and write run records with the fields of `fwbench train
--json` (compare.RunRecord, schema fwbench.run/v1) plus "driver": "python".
"""

import hashlib
import json
import os
import platform
import sys

import numpy as np

# The ops of model.Op (its String()), as net.json spells them.
# recipe.Precisions and recipe.SettingKeys: the precisions the runs take and the settings
# that decide speed, recorded in every run record's "settings" (as the Go drivers report
# them in Info().Settings) with recipe.NotApplicable where a framework has no such switch.
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
SETTING_KEYS = ("precision", "tf32", "memory_format", "cudnn_benchmark", "xla", "deterministic")
NOT_APPLICABLE = "n/a"
# recipe.LossScaleInit, LossScaleGrowth, LossScaleBackoff, LossScaleGrowthInterval: fp16's
# dynamic loss scaling, GradScaler's defaults.
LOSS_SCALE_INIT, LOSS_SCALE_GROWTH, LOSS_SCALE_BACKOFF, LOSS_SCALE_GROWTH_INTERVAL = 65536.0, 2.0, 0.5, 2000
OPS = ("conv", "batch_norm", "relu", "relu6", "max_pool", "adaptive_avg_pool", "add", "flatten", "linear", "dropout")
IMAGE = -1  # model.Image: the input index of a layer that reads the image
BN_EPS, BN_MOMENTUM = 1e-5, 0.1  # model.BNEps, model.BNMomentum (torch's convention)


def load_net(folder, man):
    """The model description the run uses: net.json as scripts/bench/export wrote it (the
    model.Net: name, head, image_size, classes, hidden and layers, each with op, name,
    inputs, out, kernel, stride, pad, groups, bias, size, mask, head, in and shape as
    [C, H, W]), checked against the SHA-256 in the manifest and for what the builders
    rely on (known ops, inputs that come first, one Linear output)."""
    if not man.get("net"):
        sys.exit(f"reference: {folder} has no model description (net.json): export it again with scripts/bench/export")
    path = os.path.join(folder, man["net"])
    got = file_sha256(path)
    if got != man["net_sha256"]:
        sys.exit(f"reference: {path}: sha256 {got}, want {man['net_sha256']} (from Go)")
    with open(path) as f:
        net = json.load(f)
    for k, mk in (("name", "model"), ("head", "head"), ("image_size", "image_size"), ("classes", "classes"),
                  ("hidden", "hidden")):
        if net[k] != man[mk]:
            sys.exit(f"reference: {path}: {k} {net[k]!r}, the manifest's {mk} is {man[mk]!r}")
    check_net(net)
    return net


def check_net(net):
    """Exits unless every layer's op is known and its inputs are earlier layers or the image,
    and the last layer is a Linear (the logits)."""
    for i, l in enumerate(net["layers"]):
        if l["op"] not in OPS:
            sys.exit(f"reference: layer {i} ({l['name']}): unknown op {l['op']!r}")
        want = 2 if l["op"] == "add" else 1
        if len(l["inputs"]) != want or not all(IMAGE <= j < i for j in l["inputs"]):
            sys.exit(f"reference: layer {i} ({l['name']}): inputs {l['inputs']}")
    if not net["layers"] or net["layers"][-1]["op"] != "linear":
        sys.exit("reference: the last layer is not a linear")


def params(net):
    """(name, shape) of every tensor in torchvision state-dict order, as model.Net.Params
    lists them (model/params.go): conv weight [out, in/groups, k, k] and bias; batch norm
    weight, bias, running_mean, running_var; linear weight [out, in] and bias."""
    out = []
    for l in net["layers"]:
        c = l["in"][0]
        if l["op"] == "conv":
            out.append((l["name"] + ".weight", (l["out"], c // l["groups"], l["kernel"], l["kernel"])))
            if l["bias"]:
                out.append((l["name"] + ".bias", (l["out"],)))
        elif l["op"] == "batch_norm":
            out += [(l["name"] + "." + leaf, (c,)) for leaf in ("weight", "bias", "running_mean", "running_var")]
        elif l["op"] == "linear":
            out += [(l["name"] + ".weight", (l["out"], c)), (l["name"] + ".bias", (l["out"],))]
    return out


def consumers(net):
    """For each layer, how many later layers read its output."""
    n = [0] * len(net["layers"])
    for l in net["layers"]:
        for j in l["inputs"]:
            if j != IMAGE:
                n[j] += 1
    return n


def last_use(net):
    """For each layer, the index of the last layer that reads it (its own index if none):
    after that layer a forward pass can drop the output."""
    last = list(range(len(net["layers"])))
    for i, l in enumerate(net["layers"]):
        for j in l["inputs"]:
            if j != IMAGE:
                last[j] = i
    return last


def dropout_layers(net):
    """Indices of the dropout layers in mask order (model.Net.Dropouts; Mask numbers 0, 1, ...)."""
    idx = [i for i, l in enumerate(net["layers"]) if l["op"] == "dropout"]
    for k, i in enumerate(idx):
        if net["layers"][i]["mask"] != k:
            sys.exit(f"reference: dropout layer {i} has mask number {net['layers'][i]['mask']}, want {k}")
    return idx


def elements(shape):
    c, h, w = shape
    return c * h * w


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
    """Returns (manifest, net, batches, weights, weights_sha256). net is the model
    description (load_net); batches is a list of (x NHWC float32, labels int32); every
    batch's hash, the weights file's and net.json's hash are checked against the manifest
    that Go wrote, and the weights file's names and shapes against the description."""
    from safetensors.numpy import load_file

    with open(os.path.join(folder, "manifest.json")) as f:
        man = json.load(f)
    if steps > len(man["batches"]):
        sys.exit(f"reference: {steps} steps wanted, the export holds {len(man['batches'])} batches")
    net = load_net(folder, man)
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
    w = load_file(wpath)
    want = dict(params(net))
    if set(w) != set(want):
        sys.exit(f"reference: {wpath}: names differ from the model's: {sorted(set(w) ^ set(want))[:6]}")
    for k, v in w.items():
        if v.shape != want[k] or v.dtype != np.float32:
            sys.exit(f"reference: {wpath}: {k} is {v.dtype} {v.shape}, want float32 {want[k]}")
    return man, net, batches, w, wsum


def load_masks(folder, man, net, steps, dropout):
    """The dropout masks the Go drivers use (model.DropoutMask, written by the exporter): for
    each of the first `steps` steps a float32 array [layers, batch, width] (the dropout
    layers in mask order, width = the elements of each one's input), each file checked
    against the SHA-256 in the manifest. None when dropout is 0 or the model has no dropout
    layer. The run's --dropout must be the exporter's: the masks are drawn for that
    probability."""
    if dropout != man.get("dropout"):
        sys.exit(f"reference: --dropout {dropout}, the export's masks are for {man.get('dropout')}")
    drops = dropout_layers(net)
    if dropout == 0 or not drops:
        return None
    names, sums = man.get("dropout_masks") or [], man.get("dropout_sha256") or []
    if steps > len(names):
        sys.exit(f"reference: {steps} steps wanted, the export holds {len(names)} dropout masks")
    if man.get("dropout_layers") != [net["layers"][i]["name"] for i in drops]:
        sys.exit(f"reference: the masks are for layers {man.get('dropout_layers')}, the model's dropouts are "
                 f"{[net['layers'][i]['name'] for i in drops]}")
    widths = {elements(net["layers"][i]["in"]) for i in drops}
    if len(widths) != 1:
        sys.exit(f"reference: dropout layers of widths {sorted(widths)} do not fit one mask file")
    want = (len(drops), man["batch_size"], widths.pop())
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


def flag(v):
    """A switch as the Go drivers write it in Info().Settings: "true" or "false"."""
    return "true" if v else "false"


def speed_settings(*, precision, tf32, memory_format, cudnn_benchmark, xla, deterministic):
    """The recipe.SettingKeys entries of a run record's settings. Booleans become "true" /
    "false" (read back from the framework by the caller), None becomes "n/a" (the framework
    has no such switch), strings stay."""
    vals = {"precision": precision, "tf32": tf32, "memory_format": memory_format,
            "cudnn_benchmark": cudnn_benchmark, "xla": xla, "deterministic": deterministic}
    return {k: NOT_APPLICABLE if v is None else flag(v) if isinstance(v, bool) else str(v) for k, v in vals.items()}


def check_precision(args, gpu):
    """Exits on what recipe.Validate refuses: tf32 needs a CUDA device (TF32 is a tensor-core
    format); on the CPU fp32, bf16 or fp16."""
    if args.precision == "tf32" and not gpu:
        sys.exit("reference: precision tf32 needs a CUDA device (TF32 is a tensor-core format); "
                 "on the cpu use fp32, bf16 or fp16")


def make_record(*, framework, version, threads, man, args, initial_loss, losses, step_times,
                total_seconds, weights_sha, settings, faults_per_step=None, device="cpu"):
    """A run record with the fields of compare.RunRecord (fwbench.run/v1) and driver "python".
    Step times and throughput cover the steps after warm-up; batches are in memory before
    the clock starts, so data_wait_fraction is 0 by construction. settings must hold every
    SETTING_KEYS key (speed_settings); "precision" is also the record's top-level field."""
    missing = [k for k in SETTING_KEYS if k not in settings]
    if missing:
        sys.exit(f"reference: the run record's settings lack {missing}")
    timed = step_times[args.warmup_steps:]
    bs = man["batch_size"]
    ips = len(timed) * bs / sum(timed) if timed else 0.0
    train_loss = float(np.mean(losses)) if losses else 0.0
    return {
        "schema": "fwbench.run/v1",
        "driver": "python",
        "framework": framework,
        "framework_version": version,
        "device": device,
        "threads": threads,
        "model": man["model"],
        "head": man["head"],
        "mode": man["mode"],
        "image_size": man["image_size"],
        "batch_size": bs,
        "optimizer": "sgd",
        "lr": args.lr,
        "precision": args.precision,
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
    # The settings that decide speed, spelled as `fwbench train`'s flags (recipe.Config).
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (TF32 off), tf32 (CUDA only), bf16 or fp16: mixed precision with float32 master "
                        "weights, fp16 with dynamic loss scaling (2^16, x2 every 2000 finite steps, x0.5 on inf/nan)")
    p.add_argument("--channels-last", action="store_true", help="torch: model and input in torch.channels_last")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="autotune convolutions: torch.backends.cudnn.benchmark; TF_CUDNN_USE_AUTOTUNE=1 (else 0)")
    p.add_argument("--xla", action="store_true", help="TensorFlow: jit_compile=True (torch: n/a, ignored)")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms where the framework has them")
    return p
