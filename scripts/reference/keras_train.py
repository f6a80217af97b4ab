#!/usr/bin/env python3
"""The Keras (TensorFlow) reference run: what a Python user would write with Keras 3 on
TensorFlow, trained on the very batches and initial weights that `fwbench train --framework
tensorflow` uses.

    python scripts/reference/keras_train.py --export DIR --steps 3 --warmup-steps 1 \
        --threads 2 --json run.json [--profile prof.json]

DIR is written by scripts/bench/export; every batch, the weights file, every dropout mask
file and the model description net.json are checked against the SHA-256 sums Go computed.

The model is the one `fwbench train` builds: the export's net.json (model.Net, the layer
graph both Go drivers interpret) as one Keras functional model in NHWC, made by one generic
loop (build below), so VGG, ResNet and MobileNetV2 are the same code. Each op's Keras form
is what a Keras user writes (keras.applications' VGG16, ResNet50 and MobileNetV2 do the
same):
  conv       Conv2D, or DepthwiseConv2D when groups = channels; padding "same" when the
             stride is 1 and pad = (k−1)/2, else ZeroPadding2D(pad) and "valid" (TF's
             "same" at stride 2 pads only bottom/right, torch pads both sides)
  batch_norm BatchNormalization(momentum=0.9, epsilon=1e-5): torch's momentum 0.1 in
             Keras' convention (moving ← 0.9·moving + 0.1·batch). Keras updates the moving
             variance with the biased batch variance, torch with the unbiased one: the
             running statistics after a step differ by the factor n/(n−1), the losses and
             weights do not
  relu/relu6 ReLU(), ReLU(max_value=6)
  max_pool   MaxPooling2D; its padding (torch's: never wins the max) is ZeroPadding2D
             when the input comes from a ReLU (values ≥ 0, and where a zero ties the
             ReLU's gradient is zero anyway: exact), else a pad of −inf
  adaptive_avg_pool  GlobalAveragePooling2D for size 1, else the pooling matrix of
             model.AdaptivePoolBins (an einsum)
  add        Add; flatten: Permute to channels-first, then Flatten (torch's C×H×W order,
             so the weights need no permutation; a 1×1 map needs no Permute)
  linear     Dense; dropout: Multiply by the exported mask (an extra model input)
Canonical (torchvision) weights are converted as tfrun converts them: conv OIHW -> HWIO,
depthwise [C, 1, k, k] -> [k, k, C, 1], linear [out, in] -> [in, out].

One step is a tf.function (no XLA: jit_compile=False, as tfrun's graph runs without XLA)
with GradientTape, the Keras SGD optimizer (momentum 0.9: v ← m·v − lr·g, w ← w + v,
which equals torch's and tfrun's update for a constant lr) and the dense softmax
cross-entropy on one-hot labels that tfrun's graph uses. Dropout draws nothing: step i
multiplies each dropout layer's input by the exported mask of step i and that layer
(model.DropoutMask, 0 or 1/(1−rate)), the masks tfrun feeds its graph, so the losses can be
compared step by step with the Go run. In features mode (the manifest's mode) the layers
outside the head are not trainable (their batch norms run in inference mode).

The settings that decide speed are `fwbench train`'s (recipe.Config), spelled the same:
  --precision fp32|tf32|bf16|fp16  bf16/fp16: every layer of the model gets the Keras dtype
      policy "mixed_bfloat16"/"mixed_float16" (float32 variables, computation in the low
      type), which is what torch's autocast does op by op: Conv2D, DepthwiseConv2D and
      Dense cast input and weights to the low type; BatchNormalization computes its
      statistics in float32 and returns the low type (torch: low in, low out, float32
      statistics); ReLU, pooling, padding and Add run in the type that reaches them. Two
      layers are placed by hand so that the types match torch's: the dropout Multiply is
      float32 (torch: low activation × float32 mask -> float32, the next linear casts it
      back), and the adaptive pooling matrix is cast to the activation's type. The logits are
      cast to float32 before the loss. fp16 wraps SGD in keras.optimizers.LossScaleOptimizer
      (dynamic: 2^16, x2 after 2000 finite steps, x0.5 and the step skipped on inf/nan,
      GradScaler's defaults). tf.config.experimental.enable_tensor_float_32_execution is
      True for tf32 (CUDA only) and False otherwise. The initial (evaluation) loss runs under
      the same precision.
  --xla                jit_compile=True for the training and evaluation steps
  --deterministic      tf.config.experimental.enable_op_determinism()
  --cudnn-benchmark    TF_CUDNN_USE_AUTOTUNE=1 (else 0), set before TensorFlow loads: TF's
                       convolution autotuning on a GPU (recorded "n/a" without one)
  --channels-last      nothing to do: Keras runs NHWC (recorded memory_format "NHWC")
The record's settings hold the six keys of recipe.SettingKeys as read back from TensorFlow
and Keras, and its top-level "precision".
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

import numpy as np  # noqa: E402


POLICY = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def build(net, keras, masks=False, frozen_base=False, precision="fp32"):
    """The model of net.json (model.Net) as one Keras functional model in NHWC, built by one
    generic loop over the layer list (see the module doc for each op's Keras form). Returns
    (model, tensors): tensors maps each Keras layer holding tensors to its net.json layer
    (load_weights sets them). With masks, the model takes one mask input per dropout layer
    after the image (mask_shape gives its layout, masks_for converts the exported ones) and
    multiplies it in, in training and evaluation alike (pass ones to evaluate); without,
    dropout is the identity. frozen_base (features mode) makes the layers outside the head
    untrainable, which keeps their batch norms in inference mode. precision bf16/fp16 gives
    every layer the mixed policy of POLICY (see the module doc), the dropout Multiply float32;
    fp32 and tf32 leave Keras' default policy."""
    L = keras.layers
    dt = POLICY.get(precision)  # None: the global policy (float32 unless changed)
    mul_dt = "float32" if dt else None
    NegInfPad, AdaptiveAvgPool = extra_layers(keras)
    layers = net["layers"]
    image = keras.Input((net["image_size"], net["image_size"], 3), name="image")
    inputs, outs, tensors = [image], [], {}

    def named(l):
        return l["name"].replace(".", "_") or None  # Keras names allow no dots

    for l in layers:
        ins = [image if j == benchlib.IMAGE else outs[j] for j in l["inputs"]]
        h, op, name = ins[0], l["op"], named(l)
        c = l["in"][0]
        if op in ("conv", "max_pool"):
            k, s, p = l["kernel"], l["stride"], l["pad"]
            same = s == 1 and 2 * p == k - 1  # Keras' "same" pads (k-1)/2 on each side only at stride 1
            if p and not same:
                src = layers[l["inputs"][0]]["op"] if l["inputs"][0] != benchlib.IMAGE else None
                if op == "conv" or src in ("relu", "relu6"):
                    h = L.ZeroPadding2D(p, dtype=dt)(h)  # a max pool's input from a ReLU is >= 0: a zero never wins alone
                else:
                    h = NegInfPad(p, dtype=dt)(h)
            pad = "same" if same else "valid"
            if op == "max_pool":
                lay = L.MaxPooling2D(k, s, padding=pad, name=name, dtype=dt)
            elif l["groups"] == 1:
                lay = L.Conv2D(l["out"], k, strides=s, padding=pad, use_bias=l["bias"], name=name, dtype=dt)
            elif l["groups"] == c == l["out"]:
                lay = L.DepthwiseConv2D(k, strides=s, padding=pad, use_bias=l["bias"], name=name, dtype=dt)
            else:
                sys.exit(f"keras_train: {l['name']}: {l['groups']} groups over {c} -> {l['out']} channels")
        elif op == "batch_norm":
            lay = L.BatchNormalization(momentum=1 - benchlib.BN_MOMENTUM, epsilon=benchlib.BN_EPS, name=name, dtype=dt)
        elif op == "relu":
            lay = L.ReLU(name=name, dtype=dt)
        elif op == "relu6":
            lay = L.ReLU(max_value=6.0, name=name, dtype=dt)
        elif op == "adaptive_avg_pool":
            lay = (L.GlobalAveragePooling2D(keepdims=True, name=name, dtype=dt) if l["size"] == 1
                   else AdaptiveAvgPool(l["in"][1], l["in"][2], l["size"], name=name, dtype=dt))
        elif op == "add":
            lay = L.Add(name=name, dtype=dt)
            h = ins
        elif op == "flatten":
            if l["in"][1] * l["in"][2] > 1:
                h = L.Permute((3, 1, 2), dtype=dt)(h)  # NHWC -> NCHW: torch's C×H×W order, so no weight permutation
            lay = L.Flatten(name=name, dtype=dt)
        elif op == "linear":
            lay = L.Dense(l["out"], name=name, dtype=dt)
        elif op == "dropout":
            if masks:
                m = keras.Input(mask_shape(l), name=f"mask{l['mask']}")
                inputs.append(m)
                h, lay = [h, m], L.Multiply(name=name, dtype=mul_dt)
            else:
                lay = L.Identity(name=name, dtype=dt)
        h = lay(h)
        if op in ("conv", "batch_norm", "linear"):
            tensors[lay] = l
        outs.append(h)
    m = keras.Model(inputs, outs[-1], name=net["name"])
    if frozen_base:
        for lay, l in tensors.items():
            lay.trainable = l["head"]  # a frozen BatchNormalization runs in inference mode
    return m, tensors


def mask_shape(l):
    """A dropout layer's mask input for one image: its input's C·H·W values in Keras' H×W×C
    layout (flat when the input is flat)."""
    c, hh, ww = l["in"]
    return (c,) if hh * ww == 1 else (hh, ww, c)


def masks_for(net, m):
    """The exported [layers, batch, C·H·W] masks (torch's C×H×W order per image) as the
    model's mask inputs."""
    out = []
    for k, i in enumerate(benchlib.dropout_layers(net)):
        c, hh, ww = net["layers"][i]["in"]
        mk = m[k]
        if hh * ww > 1:
            mk = mk.reshape(-1, c, hh, ww).transpose(0, 2, 3, 1)
        out.append(np.ascontiguousarray(mk))
    return out


def load_weights(tensors, w):
    """Canonical (torchvision layout) numpy tensors into the Keras layers: conv OIHW -> HWIO,
    depthwise [C, 1, k, k] -> [k, k, C, 1], linear [out, in] -> [in, out] (the features
    are already in torch's order: Flatten reads NCHW), batch norm weight, bias, running
    mean and variance -> gamma, beta, moving mean and variance."""
    for lay, l in tensors.items():
        n = l["name"]
        if l["op"] == "conv":
            v = w[n + ".weight"]
            v = v.transpose(2, 3, 0, 1) if l["groups"] > 1 else v.transpose(2, 3, 1, 0)
            vs = [v] + ([w[n + ".bias"]] if l["bias"] else [])
        elif l["op"] == "batch_norm":
            vs = [w[n + "." + leaf] for leaf in ("weight", "bias", "running_mean", "running_var")]
        else:
            vs = [w[n + ".weight"].T, w[n + ".bias"]]
        lay.set_weights([np.ascontiguousarray(v) for v in vs])


def extra_layers(keras):
    """The two small layers Keras has no built-in for (classes made once keras is imported)."""

    class NegInfPad(keras.layers.Layer):
        """torch's max-pool padding: p rows and columns of -inf on each side (they never win)."""

        def __init__(self, p, **kw):
            super().__init__(**kw)
            self.p = p

        def call(self, x):
            p = self.p
            return keras.ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], constant_values=float("-inf"))

    class AdaptiveAvgPool(keras.layers.Layer):
        """torch's AdaptiveAvgPool2d((size, size)) on an H×W map: out[i, j] = Σ P[i, h]·Q[j, w]·x[h, w],
        P and Q the averaging matrices of model.AdaptivePoolBins (bins ⌊i·in/out⌋ to ⌈(i+1)·in/out⌉)."""

        def __init__(self, h, w, size, **kw):
            super().__init__(**kw)
            self.P, self.Q = pool_matrix(h, size), pool_matrix(w, size)

        def call(self, x):
            # The matrices in the activation's type: bf16/fp16 in, bf16/fp16 out, as torch's
            # adaptive_avg_pool2d under autocast.
            P, Q = keras.ops.cast(self.P, x.dtype), keras.ops.cast(self.Q, x.dtype)
            return keras.ops.einsum("ih,jw,nhwc->nijc", P, Q, x)

    return NegInfPad, AdaptiveAvgPool


def pool_matrix(n, size):
    m = np.zeros((size, n), np.float32)
    for i in range(size):
        a, b = i * n // size, -(-(i + 1) * n // size)
        m[i, a:b] = 1.0 / (b - a)
    return m


def main():
    args = benchlib.common_args(argparse.ArgumentParser(description=__doc__.split("\n")[0])).parse_args()
    interop = args.interop_threads or args.threads
    t_start = time.perf_counter()
    # TF reads its autotuning switch from the environment (default on): set it before TF loads.
    os.environ["TF_CUDNN_USE_AUTOTUNE"] = "1" if args.cudnn_benchmark else "0"
    import tensorflow as tf
    import keras

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(interop)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    benchlib.check_precision(args, gpu)
    tf.config.experimental.enable_tensor_float_32_execution(args.precision == "tf32")
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    man, net, batches, w, wsum = benchlib.load_export(args.export, args.steps)
    masks = benchlib.load_masks(args.export, man, net, args.steps, args.dropout)
    masks = None if masks is None else [masks_for(net, m) for m in masks]
    classes = man["classes"]

    model, tensors = build(net, keras, masks=masks is not None, frozen_base=man["mode"] == "features",
                           precision=args.precision)
    load_weights(tensors, w)
    del w
    variables = model.trainable_variables
    opt = keras.optimizers.SGD(learning_rate=args.lr, momentum=args.momentum)
    if args.precision == "fp16":
        # Keras' dynamic scaling: x2 after dynamic_growth_steps finite steps, x0.5 and the step
        # skipped on inf/nan (the factors are fixed at GradScaler's 2 and 0.5).
        opt = keras.optimizers.LossScaleOptimizer(opt, initial_scale=benchlib.LOSS_SCALE_INIT,
                                                  dynamic_growth_steps=benchlib.LOSS_SCALE_GROWTH_INTERVAL)
    opt.build(variables)
    scaled = isinstance(opt, keras.optimizers.LossScaleOptimizer)

    def xent(logits, y):
        # The loss in float32 on the logits cast to float32 (low logits under bf16/fp16).
        logits = tf.cast(logits, tf.float32)
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=tf.one_hot(y, classes), logits=logits))

    @tf.function(jit_compile=args.xla, reduce_retracing=True)
    def train_step(inputs, y):
        with tf.GradientTape() as tape:
            loss = xent(model(inputs, training=True), y)
            target = opt.scale_loss(loss) if scaled else loss
        grads = tape.gradient(target, variables)
        opt.apply_gradients(zip(grads, variables))  # LossScaleOptimizer: unscale, skip on inf/nan
        return loss

    @tf.function(jit_compile=args.xla, reduce_retracing=True)
    def eval_loss(inputs, y):
        return xent(model(inputs, training=False), y)

    def feed(x, ms):
        return [tf.constant(x)] + [tf.constant(m) for m in ms or []]

    x0, y0 = batches[0]
    ones = None if masks is None else [np.ones_like(m) for m in masks[0]]
    initial_loss = float(eval_loss(feed(x0, ones), tf.constant(y0)).numpy())

    def step(i, x, y):
        # The profiled extra step (i = steps) reuses step 0's masks with batch 0.
        ms = None if masks is None else masks[i % len(masks)]
        try:
            return float(train_step(feed(x, ms), tf.constant(y)).numpy())
        except tf.errors.UnimplementedError as e:
            # e.g. --xla with --deterministic: XLA has no deterministic MaxPool gradient.
            sys.exit(f"keras_train: {e.message.splitlines()[0]}")

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

    settings = benchlib.speed_settings(
        precision=args.precision, tf32=gpu and tf.config.experimental.tensor_float_32_execution_enabled(),
        memory_format="NHWC" if keras.config.image_data_format() == "channels_last" else "NCHW",
        # No cuDNN without a GPU; on one, TF autotunes unless TF_CUDNN_USE_AUTOTUNE is 0/false.
        cudnn_benchmark=os.environ["TF_CUDNN_USE_AUTOTUNE"].lower() not in ("0", "false") if gpu else None,
        xla=bool(train_step._jit_compile), deterministic=op_determinism(tf, args.deterministic))
    if scaled:
        settings |= {"loss_scale": float(opt.dynamic_scale.numpy()), "loss_scale_growth_steps": opt.dynamic_growth_steps}
    settings |= {
        "threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "interop_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: on by default on x86 Linux)"),
        "dtype_policy": POLICY.get(args.precision, keras.config.dtype_policy().name),
        "logits_dtype": model.outputs[0].dtype, "keras": keras.__version__,
        "keras_backend": keras.backend.backend(), "model": man["model"], "head": man["head"],
        "builder": "keras_train.build (net.json, Keras functional model)",
        "dropout": args.dropout, "hidden": man["hidden"], "momentum": args.momentum,
        "weight_decay": 0.0, "optimizer_impl": "keras.optimizers.SGD", "loss": "softmax_cross_entropy_with_logits(one_hot)",
        "python": sys.version.split()[0], "numpy": np.__version__, "cpu": benchlib.cpu_model(),
    }
    rec = benchlib.make_record(framework="tensorflow", version=tf.__version__, threads=args.threads, man=man, args=args,
                               initial_loss=initial_loss, losses=losses, step_times=times, total_seconds=total,
                               weights_sha=wsum, settings=settings, faults_per_step=faults,
                               device="cuda" if gpu else "cpu")
    if args.json:
        benchlib.write_json(args.json, rec)
    if args.profile:
        benchlib.write_json(args.profile, profile(tf, step, batches, len(batches)))
    print(f"tensorflow {tf.__version__}: initial loss {initial_loss:.6f}, step p50 {rec['step_seconds']['p50']:.3f} s, "
          f"{rec['images_per_second']:.2f} images/s, peak RSS {rec['peak_rss_bytes'] >> 20} MiB", file=sys.stderr)


def op_determinism(tf, asked):
    """Whether TF's op determinism is on, read back where TF says (a module outside tf's public
    API; the flag asked for where it is missing)."""
    try:
        from tensorflow.python.framework import config as tfconfig

        return bool(tfconfig.is_op_determinism_enabled())
    except (ImportError, AttributeError):
        return asked


def classify(op_type, name):
    t, n = op_type.lower(), name.lower()
    if "conv" in t:
        return "conv"
    if "matmul" in t:
        return "linear"
    if "sgd" in n or "applygradient" in t or "assign" in t or "optimizer" in n:
        return "optimizer"
    return "other"


def xplane_ops(tf, run):
    """Runs run() under TensorFlow's own profiler (tf.profiler.experimental, the trace
    TensorBoard's profile plugin reads) and returns the TF op events of the host CPU plane,
    named "op_name:OpType", as [start_us, duration_us, op_name, op_type] sorted by start
    (relative to the first op), and run()'s wall time. Runtime events (ExecutorState::Process
    ...) and the tf.function as a whole are left out. scripts/bench/tfgap uses it too."""
    import glob
    import tempfile

    try:
        from tsl.profiler.protobuf import xplane_pb2
    except ImportError:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2

    logdir = tempfile.mkdtemp(prefix="fwbench-tfprof-")
    tf.profiler.experimental.start(logdir)
    t0 = time.perf_counter()
    run()
    wall = time.perf_counter() - t0
    tf.profiler.experimental.stop()
    files = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    space = xplane_pb2.XSpace()
    with open(files[-1], "rb") as f:
        space.ParseFromString(f.read())
    events = []
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
                events.append([(line.timestamp_ns * 1000 + ev.offset_ps) / 1e6, ev.duration_ps / 1e6, op_name, op_type])
    if events:
        first = min(e[0] for e in events)
        for e in events:
            e[0] -= first
    events.sort()
    return events, wall


def profile(tf, step, batches, i0):
    """One more step (on batch 0) under TensorFlow's own profiler (xplane_ops): the TF ops'
    time summed by op type into conv / linear / optimizer / other."""
    x, y = batches[0]
    events, wall = xplane_ops(tf, lambda: step(i0, x, y))
    per_type, split = {}, {}
    for _, us, op_name, op_type in events:
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
