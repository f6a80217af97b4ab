#!/usr/bin/env python3
"""The Keras side of scripts/bench/tfgap: keras_train.py's fp32 training step (same model
builder, weights, masks, SGD momentum, tf.function without XLA, threads), run for --steps
untraced steps, then one more under TensorFlow's profiler. Writes OUT/keras.graphdef.pb (the
step's function graph as traced, before grappler), OUT/keras.timeline.json (every op event
of the profiled step: start, duration, name, type), OUT/keras.config.pb (the eager
context's ConfigProto) and OUT/keras.faults.json (minor page faults per untraced step).
TF 2.21's eager context returns an empty RunMetadata for a function call, hence the profiler.

    python scripts/bench/tfgap/keras_trace.py --export DIR --out OUT --steps 2 --threads 2
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "reference"))
import benchlib  # noqa: E402
import keras_train  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--export", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-trace", action="store_true", help="skip the traced step (for ONEDNN_VERBOSE runs)")
    args = p.parse_args()
    os.environ["TF_CUDNN_USE_AUTOTUNE"] = "0"  # as keras_train.py without --cudnn-benchmark
    import tensorflow as tf
    import keras
    from tensorflow.python.eager import context

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    tf.config.experimental.enable_tensor_float_32_execution(False)
    with open(os.path.join(args.export, "manifest.json")) as f:
        held = len(json.load(f)["batches"])  # steps past the export's batches reuse them in turn
    man, net, batches, w, _ = benchlib.load_export(args.export, min(args.steps + 1, held))
    masks = benchlib.load_masks(args.export, man, net, len(batches), 0.5)
    masks = [keras_train.masks_for(net, m) for m in masks]
    classes = man["classes"]
    model, tensors = keras_train.build(net, keras, masks=True, frozen_base=man["mode"] == "features")
    keras_train.load_weights(tensors, w)
    del w
    variables = model.trainable_variables
    opt = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
    opt.build(variables)

    def xent(logits, y):  # keras_train.py's
        logits = tf.cast(logits, tf.float32)
        return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=tf.one_hot(y, classes), logits=logits))

    @tf.function(jit_compile=False, reduce_retracing=True)
    def train_step(inputs, y):  # keras_train.py's, fp32 without loss scaling
        with tf.GradientTape() as tape:
            loss = xent(model(inputs, training=True), y)
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))
        return loss

    def step(i):
        x, y = batches[i % len(batches)]
        ms = masks[i % len(masks)]
        return float(train_step([tf.constant(x)] + [tf.constant(m) for m in ms], tf.constant(y)).numpy())

    faults = []
    for i in range(args.steps):
        f0, t0 = benchlib.minor_faults(), time.perf_counter()
        loss = step(i)
        faults.append(benchlib.minor_faults() - f0)
        print(f"keras step {i + 1}: loss {loss:.6f}, {faults[-1]} minor faults, {time.perf_counter() - t0:.3f} s "
              "(loaded machine: indicative only)", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "keras.faults.json"), "w") as f:
        json.dump({"minor_faults_per_step": faults, "page_bytes": os.sysconf("SC_PAGE_SIZE")}, f)
    with open(os.path.join(args.out, "keras.config.pb"), "wb") as f:
        f.write(context.context().config.SerializeToString())
    if args.no_trace:
        return
    # The step's function graph as traced (before grappler): which tensors the gradients read.
    x, y = batches[0]
    cf = train_step.get_concrete_function([tf.constant(x)] + [tf.constant(m) for m in masks[0]], tf.constant(y))
    with open(os.path.join(args.out, "keras.graphdef.pb"), "wb") as f:
        f.write(cf.graph.as_graph_def().SerializeToString())
    # TF 2.21's eager context returns no RunMetadata (graphs, step stats) for a function call
    # (export_run_metadata is empty), so what ran comes from TF's profiler: every op event of
    # one more step, with its start and duration (XPlane), as keras_train.profile reads them.
    events, wall = xplane_step(tf, lambda: step(args.steps))
    with open(os.path.join(args.out, "keras.timeline.json"), "w") as f:
        json.dump({"wall_seconds": wall, "events": events}, f)
    print(f"keras traced step: {len(events)} op events", file=sys.stderr)


def xplane_step(tf, run):
    """Runs run() under tf.profiler.experimental and returns the TF op events of the host
    CPU plane as [start_us, duration_us, op_name, op_type] (start relative to the first op),
    and the wall time: keras_train.xplane_ops, the reference script's own reader."""
    return keras_train.xplane_ops(tf, run)


if __name__ == "__main__":
    main()
