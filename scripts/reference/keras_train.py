#!/usr/bin/env python3
"""The Keras (TensorFlow) reference run: what a Python user would write with Keras 3 on
TensorFlow, trained on the very batches and initial weights that `fwbench train --framework
tensorflow` uses.

    python scripts/reference/keras_train.py --export DIR --steps 3 --warmup-steps 1 \
        --threads 2 --json run.json [--profile prof.json]

DIR is written by scripts/bench/export; every batch, the weights file and every dropout
mask file are checked against the SHA-256 sums Go computed.

The model is VGG16 in NHWC, as keras.applications.VGG16 lays it out (Conv2D 3×3 "same" +
ReLU, MaxPooling2D 2×2, Flatten, Dense), with fwbench's classifier (4096-4096-classes,
dropout 0.5). Canonical (torchvision) weights are converted as tfrun converts them
(tfrun/layout.go): conv OIHW -> HWIO, linear [out, in] -> [in, out], and the first
classifier layer's input rows reordered from torch's C×H×W flattening to Keras' H×W×C.

One step is a tf.function (no XLA: jit_compile=False, as tfrun's graph runs without XLA)
with GradientTape, the Keras SGD optimizer (momentum 0.9: v ← m·v − lr·g, w ← w + v,
which equals torch's and tfrun's update for a constant lr) and the dense softmax
cross-entropy on one-hot labels that tfrun's graph uses. Dropout draws nothing: step i
multiplies each hidden layer's activation (after ReLU) by the exported mask of step i and
that layer (model.DropoutMask, 0 or 1/(1−rate)), the masks tfrun feeds its graph, so the
losses can be compared step by step with the Go run.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

import numpy as np  # noqa: E402


def to_keras(name, v, image_size):
    """Canonical torchvision layout -> Keras layout (see tfrun/layout.go)."""
    if v.ndim == 4:  # OIHW -> HWIO
        return np.ascontiguousarray(v.transpose(2, 3, 1, 0))
    if v.ndim == 2:
        if name == "classifier.0.weight":
            s = image_size // 32
            out, inp = v.shape
            c = inp // (s * s)
            # W[o, c·s·s + h·s + w] -> row (h·s + w)·C + c of the [in, out] kernel
            v = v.reshape(out, c, s, s).transpose(0, 2, 3, 1).reshape(out, inp)
        return np.ascontiguousarray(v.T)
    return v


def main():
    args = benchlib.common_args(argparse.ArgumentParser(description=__doc__.split("\n")[0])).parse_args()
    interop = args.interop_threads or args.threads
    t_start = time.perf_counter()
    import tensorflow as tf
    import keras

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(interop)
    man, batches, w, wsum = benchlib.load_export(args.export, args.steps)
    masks = benchlib.load_masks(args.export, man, args.steps, args.dropout)
    S, classes, hidden, rate = man["image_size"], man["classes"], man["hidden"], args.dropout
    L = keras.layers

    # Layers named after the canonical parameters they hold (dots are not allowed in names).
    convs, feats, cin, s = {}, [], 3, S
    for idx, kind, v in benchlib.features_layout():
        if kind == "pool":
            feats.append(L.MaxPooling2D(2, 2, name=f"features_{idx}"))
            s //= 2
        else:
            lay = L.Conv2D(v, 3, padding="same", activation="relu", name=f"features_{idx}")
            lay.build((None, s, s, cin))
            convs[idx] = lay
            feats.append(lay)
            cin = v
    flat = L.Flatten()
    fc = [L.Dense(hidden, activation="relu", name="classifier_0"), L.Dense(hidden, activation="relu", name="classifier_3"),
          L.Dense(classes, name="classifier_6")]
    fc[0].build((None, cin * s * s))
    fc[1].build((None, hidden))
    fc[2].build((None, hidden))
    for idx, lay in convs.items():
        lay.kernel.assign(to_keras(f"features.{idx}.weight", w[f"features.{idx}.weight"], S))
        lay.bias.assign(w[f"features.{idx}.bias"])
    for i, lay in zip((0, 3, 6), fc):
        lay.kernel.assign(to_keras(f"classifier.{i}.weight", w[f"classifier.{i}.weight"], S))
        lay.bias.assign(w[f"classifier.{i}.bias"])
    del w
    variables = [v for lay in list(convs.values()) + fc for v in (lay.kernel, lay.bias)]
    opt = keras.optimizers.SGD(learning_rate=args.lr, momentum=args.momentum)
    opt.build(variables)

    def forward(x, masks=None):
        h = x
        for lay in feats:
            h = lay(h)
        h = flat(h)
        for i, lay in enumerate(fc):
            h = lay(h)
            if masks is not None and i < 2:
                h = h * masks[i]
        return h

    def xent(logits, y):
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=tf.one_hot(y, classes), logits=logits))

    @tf.function(jit_compile=False, reduce_retracing=True)
    def train_step(x, y, m):
        with tf.GradientTape() as tape:
            loss = xent(forward(x, m), y)
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        return loss

    @tf.function(jit_compile=False, reduce_retracing=True)
    def eval_loss(x, y):
        return xent(forward(x), y)

    x0, y0 = batches[0]
    initial_loss = float(eval_loss(tf.constant(x0), tf.constant(y0)).numpy())

    def step(i, x, y):
        # The profiled extra step (i = steps) reuses step 0's masks with batch 0.
        m = None if masks is None else tf.constant(masks[i % len(masks)])
        return float(train_step(tf.constant(x), tf.constant(y), m).numpy())

    losses, times = [], []
    flt0 = 0
    for i, (x, y) in enumerate(batches):
        if i == args.warmup_steps:
            flt0 = benchlib.minor_faults()
        t0 = time.perf_counter()
        loss = step(i, x, y)
        times.append(time.perf_counter() - t0)
        losses.append(loss)
        print(f"keras step {i + 1}/{len(batches)}: loss {loss:.6f} {times[-1]:.3f} s", file=sys.stderr)
    total = time.perf_counter() - t_start
    faults = (benchlib.minor_faults() - flt0) / max(1, len(batches) - args.warmup_steps)

    settings = {
        "threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "interop_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: on by default on x86 Linux)"),
        "memory_format": "NHWC (channels_last)", "jit_compile": False, "keras": keras.__version__,
        "keras_backend": keras.backend.backend(), "dropout": rate, "hidden": hidden, "momentum": args.momentum,
        "weight_decay": 0.0, "optimizer_impl": "keras.optimizers.SGD", "loss": "softmax_cross_entropy_with_logits(one_hot)",
        "python": sys.version.split()[0], "numpy": np.__version__, "cpu": benchlib.cpu_model(),
    }
    rec = benchlib.make_record(framework="tensorflow", version=tf.__version__, threads=args.threads, man=man, args=args,
                               initial_loss=initial_loss, losses=losses, step_times=times, total_seconds=total,
                               weights_sha=wsum, settings=settings, faults_per_step=faults)
    if args.json:
        benchlib.write_json(args.json, rec)
    if args.profile:
        benchlib.write_json(args.profile, profile(tf, step, batches, len(batches)))
    print(f"tensorflow {tf.__version__}: initial loss {initial_loss:.6f}, step p50 {rec['step_seconds']['p50']:.3f} s, "
          f"{rec['images_per_second']:.2f} images/s, peak RSS {rec['peak_rss_bytes'] >> 20} MiB", file=sys.stderr)


def classify(op_type, name):
    t, n = op_type.lower(), name.lower()
    if "conv" in t:
        return "conv"
    if "matmul" in t:
        return "linear"
    if "sgd" in n or "applygradient" in t or "assign" in t or "optimizer" in n:
        return "optimizer"
    return "other"


def profile(tf, step, batches, i0):
    """One more step (on batch 0) under TensorFlow's own profiler (tf.profiler.experimental,
    the trace TensorBoard's profile plugin reads): the XPlane events of TF ops, named
    "op_name:OpType", summed by op type into conv / linear / optimizer / other."""
    import glob
    import tempfile

    try:
        from tsl.profiler.protobuf import xplane_pb2
    except ImportError:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2

    x, y = batches[0]
    logdir = tempfile.mkdtemp(prefix="fwbench-tfprof-")
    tf.profiler.experimental.start(logdir)
    t0 = time.perf_counter()
    step(i0, x, y)
    wall = time.perf_counter() - t0
    tf.profiler.experimental.stop()
    files = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    space = xplane_pb2.XSpace()
    with open(files[-1], "rb") as f:
        space.ParseFromString(f.read())
    per_type, split = {}, {}
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for ev in line.events:
                name = plane.event_metadata[ev.metadata_id].name
                if ":" not in name or "::" in name:
                    continue  # runtime events (ExecutorState::Process ...), not ops
                op_name, op_type = name.rsplit(":", 1)
                if not op_type or op_type[0].isspace() or "__inference" in op_type:
                    continue  # the tf.function as a whole
                us = ev.duration_ps / 1e6
                c = classify(op_type, op_name)
                split[c] = split.get(c, 0) + us
                e = per_type.setdefault(op_type, {"op": op_type, "self_us": 0, "calls": 0})
                e["self_us"] += us
                e["calls"] += 1
    ops = sorted(per_type.values(), key=lambda o: -o["self_us"])
    return {"framework": "tensorflow", "profiler": "tf.profiler.experimental (XPlane op events)",
            "wall_seconds": wall, "split_us": split, "top_ops": ops[:25]}


if __name__ == "__main__":
    main()
