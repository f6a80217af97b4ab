#!/usr/bin/env python3
"""Check the generic model builders of the reference runs (torch_train.Net, keras_train.build)
against torchvision's own modules and against each other.

    . scripts/env.sh && ~/.cache/fwbench/pyref/bin/python scripts/reference/check_builders.py

Part 1, for every model of testdata/reference/models_s32.safetensors (make_model_fixtures.py:
resnet18, resnet50, mobilenet_v2 and vgg11_bn from torchvision 0.26's modules): it asks Go
for the model description (`go run ./scripts/bench/export --describe FILE` with the
fixture's model.Spec; --nets DIR reads files named as describe() says instead), builds it
with both builders, sets the formula weights (make_fixture.py's load_formula, in
model.Net.Params order; their SHA-256 must be the fixture's) and compares on the fixture's
input (reftest.Input(4, 32)):

  - the eval-mode logits and loss,
  - the train-mode logits and loss of one SGD step (lr 0.01, momentum 0.9, weight decay 5e-4
    added to the gradient as torch does; Keras: torch's first step written out,
    w ← w − lr·(g + wd·w), since keras.optimizers.SGD's weight decay is decoupled and its
    learning rate a float32 variable),
  - the output layer after the step in full, and the first 64 values of every other updated
    tensor (torch: all of them; Keras: weights, biases and moving means, not the moving
    variance, which Keras updates with the biased batch variance).

Part 2 compares the Keras builder with the torch builder at 64 px, batch 8 (PAIR_SPECS: every
non-VGG model and VGG's three heads). Both parts also run the Keras builder in float64
against the torch builder in float64, where rounding cannot hide a difference in what the
two compute.

Part 3 (bf16) is part 2 in mixed bfloat16, the --precision bf16 of the reference runs: the
torch builder under torch.autocast("cpu", torch.bfloat16) with the loss on the logits cast
to float32, the Keras builder with precision="bf16" (its mixed_bfloat16 layers, float32
dropout multiply and loss). The noise of a quantity is here how far the torch builder's bf16
result lies from its float32 one (what bfloat16's 8-bit significand does to it); the two
bf16 runs must agree within NOISE_BF16 times that, and each must differ from its own float32
run (bf16 really ran).

    check_builders.py --parts bf16    # part 3 alone (about a minute)

It prints the largest absolute and relative differences with the noise each bound allows
(see ABS, REL, NOISE) and exits 1 when one exceeds its bound. Tests never run this script;
it is how the reference runs were checked (scripts/reference/README.md has its results).
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402
import keras_train  # noqa: E402
import torch_train  # noqa: E402
from make_fixture import load_formula, make_input, names_in_order  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

FIXTURE = os.path.join(ROOT, "testdata", "reference", "models_s32.safetensors")
# Bounds: |got − want| ≤ ABS + REL·|want| + NOISE·noise, elementwise, where noise is how far the
# torch builder's float32 result lies from its float64 one (Diffs.add; f64 scales it). Two
# float32 implementations each lie about noise from the exact value; where noise is large
# the amplification is not linear: the largest ratio measured is 5.9 (resnet50 at 32 px ×
# 4, float64 tensors after the step), hence 8.
ABS, REL, NOISE = 1e-5, 1e-4, 8
# The builder-against-builder part: 64 px, batch 8, 3 classes, dropout 0, every model and VGG head.
PAIR_BATCH = 8
PAIR_SPECS = [{"name": n, "image_size": 64, "classes": 3} for n in ("resnet18", "resnet50", "mobilenet_v2")] + [
    {"name": n, "head": h, "image_size": 64, "classes": 3, "hidden": 32}
    for n, h in (("vgg16", "flatten"), ("vgg16_bn", "torchvision"), ("vgg11", "keras"))]
F64 = (1e-10, 1e-8)  # float64 against float64
SGD = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}
# bf16 against bf16 (part 3): two implementations that each round to bfloat16 where torch's
# autocast does lie from one another about as far as each lies from float32, in either
# direction: 2 covers the sum of two such distances, 4 leaves room for rounding points that
# differ (a conv's output rounded before or after its bias).
NOISE_BF16 = 4


def describe(spec, nets):
    """net.json of a model.Spec (the fixture's spelling), from Go, or with nets from
    nets/<name>-<head or "default">-s<image size>-h<hidden>.json."""
    if nets:
        key = f"{spec['name']}-{spec.get('head') or 'default'}-s{spec['image_size']}-h{spec.get('hidden', 0)}"
        with open(os.path.join(nets, key + ".json")) as f:
            return json.load(f)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "net.json")
        cmd = ["go", "run", "./scripts/bench/export", "--describe", path, "--model", spec["name"],
               "--head", spec.get("head", ""), "--image-size", str(spec["image_size"]),
               "--classes", str(spec["classes"]), "--hidden", str(spec.get("hidden", 0))]
        subprocess.run(cmd, cwd=ROOT, check=True)
        with open(path) as f:
            return json.load(f)


class Diffs:
    def __init__(self):
        self.rows, self.failed = [], False

    def add(self, model, what, got, want, noise=0.0, bound=(ABS, REL), factor=NOISE):
        """Bound: ABS + REL·|want| + NOISE·noise elementwise, noise being how far the torch
        builder's own float32 result lies from its float64 one (how well conditioned the
        quantity is: two float32 implementations may each lie that far from the exact value)."""
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        if got.shape != want.shape:
            self.rows.append((model, what, float("inf"), float("inf"), noise, f"shape {got.shape}, want {want.shape}"))
            self.failed = True
            return
        d = np.abs(got - want)
        rel = float(np.max(d / np.maximum(np.abs(want), 1e-30))) if d.size else 0.0
        bad = bool(np.any(d > bound[0] + bound[1] * np.abs(want) + factor * noise))
        self.failed |= bad
        self.rows.append((model, what, float(np.max(d)) if d.size else 0.0, rel, noise, "FAIL" if bad else ""))

    def print(self):
        print(f"{'model':<22} {'check':<44} {'max |diff|':>11} {'max rel':>10} {'noise':>11}")
        for m, w, a, r, n, note in self.rows:
            print(f"{m:<22} {w:<44} {a:>11.3e} {r:>10.3e} {n:>11.3e} {note}")


def torch_run(net, x, y, sgd, double=False, low=None):
    """The torch builder: returns (module, tensor names, eval logits, train logits, train
    loss, state after the step, initial weights); double runs it in float64 from the same
    float32 start; low (torch.bfloat16) runs the forward passes under CPU autocast in that
    type and the loss on the logits cast to float32, as torch_train.py --precision bf16."""
    m = torch_train.Net(net)
    names = load_formula(m)
    w0 = {k: v.detach().clone().numpy() for k, v in m.state_dict().items()}
    if double:
        m, x = m.double(), x.double()

    def fwd(x):
        with torch.autocast("cpu", dtype=low or torch.float32, enabled=low is not None):
            out = m(x)
        if low is not None and out.dtype != low:
            sys.exit(f"check_builders: logits are {out.dtype} under autocast, want {low}")
        return out.float() if low is not None else out

    m.eval()
    with torch.no_grad():
        ev = fwd(x)
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=sgd["lr"], momentum=sgd["momentum"], weight_decay=sgd["weight_decay"])
    opt.zero_grad()
    tr = fwd(x)
    loss = torch.nn.functional.cross_entropy(tr, y)
    loss.backward()
    opt.step()
    after = {k: v.detach().numpy() for k, v in m.state_dict().items()}
    return m, names, ev.numpy(), tr.detach().numpy(), float(loss.detach()), after, w0


def keras_run(net, w0, x_nhwc, y, classes, sgd, dtype="float32", precision="fp32"):
    """The Keras builder, as torch_run; dtype "float64" builds it with float64 layers (Keras'
    floatx) from the same float32 start; precision "bf16" builds it with keras_train's
    mixed_bfloat16 layers and casts the logits to float32 before the loss."""
    import keras
    import tensorflow as tf

    keras.config.set_floatx(dtype)  # the Inputs' dtype
    keras.config.set_dtype_policy(dtype)  # the layers'
    try:
        model, tensors = keras_train.build(net, keras, precision=precision)
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")
    keras_train.load_weights(tensors, {k: v.astype(dtype) for k, v in w0.items()})
    x = tf.constant(x_nhwc.astype(dtype))
    ev = tf.cast(model([x], training=False), dtype).numpy()
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        tr = tf.cast(model([x], training=True), dtype)
        loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=tf.one_hot(y, classes, dtype=dtype),
                                                                      logits=tr))
    # torch's first SGD step written out (the momentum buffer starts as the gradient with
    # the weight decay added; keras.optimizers.SGD would hold lr in float32 and decouple the
    # decay): w ← w − lr·(g + wd·w).
    for g, v in zip(tape.gradient(loss, variables), variables):
        v.assign_sub(sgd["lr"] * (g + sgd["weight_decay"] * v))
    after = {}
    for lay, l in tensors.items():
        n, ws = l["name"], [v.numpy() for v in lay.weights]
        if l["op"] == "conv":
            k = ws[0].transpose(2, 3, 0, 1) if l["groups"] > 1 else ws[0].transpose(3, 2, 0, 1)
            after[n + ".weight"] = k
            if l["bias"]:
                after[n + ".bias"] = ws[1]
        elif l["op"] == "batch_norm":
            after[n + ".weight"], after[n + ".bias"], after[n + ".running_mean"] = ws[0], ws[1], ws[2]
        else:
            after[n + ".weight"], after[n + ".bias"] = ws[0].T, ws[1]
    return ev, tr.numpy(), float(loss), after


def check_fixture(args, diffs):
    """Both builders against models_s32.safetensors (torchvision's modules)."""
    from safetensors import safe_open

    with safe_open(args.fixture, "np") as f:
        meta = f.metadata()
        fx = {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(meta["config"])
    shas = json.loads(meta["weights_sha256"])
    first = int(meta["first"])
    classes = cfg["classes"]
    x, y = make_input(cfg["batch"], cfg["image_size"], classes)
    x_nhwc = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())
    for name in cfg["models"]:
        net = describe(cfg["specs"][name], args.nets)
        benchlib.check_net(net)
        names = [n for n, _ in benchlib.params(net)]
        if names != json.loads(meta["names"])[name]:
            sys.exit(f"check_builders: {name}: net.json's tensors are not the fixture's names")
        m, tnames, ev, tr, tl, after, w0 = torch_run(net, x, y, cfg["sgd"])
        if tnames != names or names_in_order(m) != names:
            sys.exit(f"check_builders: {name}: torch_train.Net's state-dict order is not model.Net.Params'")
        h = hashlib.sha256()  # make_fixture.weights_sha256 of the starting tensors
        for n in names:
            h.update(w0[n].astype("<f4").tobytes())
        if h.hexdigest() != shas[name]:
            sys.exit(f"check_builders: {name}: formula weights sha256 {h.hexdigest()}, fixture {shas[name]}")
        _, _, ev64, tr64, tl64, after64, _ = torch_run(net, x, y, cfg["sgd"], double=True)
        out = cfg["output"][name]
        rest = [n for n in names if n.rsplit(".", 1)[0] != out]

        def outl(a):
            return np.concatenate([a[out + ".weight"].ravel(), a[out + ".bias"]])

        def firsts(a, ns):
            return np.concatenate([a[n].ravel()[:first] for n in ns])

        want_out = np.concatenate([fx[f"{name}/sgd1/{out}.weight"].ravel(), fx[f"{name}/sgd1/{out}.bias"]])
        n_ev, n_tr, n_tl, n_out = noise(ev, ev64), noise(tr, tr64), noise(tl, tl64), noise(outl(after), outl(after64))
        diffs.add(name, "torch: eval logits", ev, fx[f"{name}/logits"])
        diffs.add(name, "torch: eval loss", [float(torch.nn.functional.cross_entropy(torch.from_numpy(ev), y))],
                  fx[f"{name}/loss"])
        diffs.add(name, "torch: train logits", tr, fx[f"{name}/train_logits"])
        diffs.add(name, "torch: sgd1 loss", [tl], fx[f"{name}/sgd1/loss"])
        diffs.add(name, f"torch: sgd1 {out}.weight, .bias", outl(after), want_out)
        diffs.add(name, f"torch: sgd1 first{first} of {len(rest)} tensors", firsts(after, rest),
                  np.concatenate([fx[f"{name}/sgd1/{n}/first{first}"] for n in rest]))

        kev, ktr, ktl, kafter = keras_run(net, w0, x_nhwc, y.numpy(), classes, cfg["sgd"])
        krest = [n for n in rest if n in kafter]
        diffs.add(name, "keras: eval logits", kev, fx[f"{name}/logits"], n_ev)
        diffs.add(name, "keras: train logits", ktr, fx[f"{name}/train_logits"], n_tr)
        diffs.add(name, "keras: sgd1 loss", [ktl], fx[f"{name}/sgd1/loss"], n_tl)
        diffs.add(name, f"keras: sgd1 {out}.weight, .bias", outl(kafter), want_out, n_out)
        diffs.add(name, f"keras: sgd1 first{first} of {len(krest)} tensors", firsts(kafter, krest),
                  np.concatenate([fx[f"{name}/sgd1/{n}/first{first}"] for n in krest]),
                  noise(firsts(after, krest), firsts(after64, krest)))
        f64(diffs, name, net, w0, x_nhwc, y, classes, cfg["sgd"], (ev, tr, tl, after), (ev64, tr64, tl64, after64))
        print(f"{name}: {len(net['layers'])} layers, {len(names)} tensors", file=sys.stderr)


def pair_cases(args):
    """Each of PAIR_SPECS with its checked description and its input batch (NCHW torch tensors
    and the NHWC array Keras takes)."""
    for spec in PAIR_SPECS:
        net = describe(spec, args.nets)
        benchlib.check_net(net)
        x, y = make_input(PAIR_BATCH, spec["image_size"], spec["classes"])
        yield spec, net, x, y, np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


def check_pair(args, diffs):
    """torch builder against Keras builder at 64 px, batch 8 (better conditioned than 32 px ×
    4, and VGG's heads see a 2×2 map: Flatten's permutation and the 2 → 7 pooling matrix)."""
    for spec, net, x, y, x_nhwc in pair_cases(args):
        _, _, ev, tr, tl, after, w0 = torch_run(net, x, y, SGD)
        _, _, ev64, tr64, tl64, after64, _ = torch_run(net, x, y, SGD, double=True)
        kev, ktr, ktl, kafter = keras_run(net, w0, x_nhwc, y.numpy(), spec["classes"], SGD)
        out = net["layers"][-1]["name"]
        ws = [n for n, _ in benchlib.params(net) if n in kafter and n.rsplit(".", 1)[0] != out]
        tag = f"{spec['name']}/{net['head']}"
        diffs.add(tag, "keras vs torch @64px×8: eval logits", kev, ev, noise(ev, ev64))
        diffs.add(tag, "keras vs torch @64px×8: train logits", ktr, tr, noise(tr, tr64))
        diffs.add(tag, "keras vs torch @64px×8: sgd1 loss", [ktl], [tl], noise(tl, tl64))
        for k in (".weight", ".bias"):
            diffs.add(tag, f"keras vs torch @64px×8: sgd1 {out}{k}", kafter[out + k], after[out + k],
                      noise(after[out + k], after64[out + k]))
        diffs.add(tag, f"keras vs torch @64px×8: sgd1 {len(ws)} other tensors",
                  np.concatenate([kafter[n].ravel() for n in ws]), np.concatenate([after[n].ravel() for n in ws]),
                  noise(np.concatenate([after[n].ravel() for n in ws]), np.concatenate([after64[n].ravel() for n in ws])))
        f64(diffs, tag, net, w0, x_nhwc, y, spec["classes"], SGD, (ev, tr, tl, after), (ev64, tr64, tl64, after64))
        print(f"{tag} at 64 px: {len(net['layers'])} layers", file=sys.stderr)


def check_bf16(args, diffs):
    """Part 3: the Keras builder in mixed bfloat16 against the torch builder under bf16
    autocast, at 64 px × 8 on PAIR_SPECS; noise is the torch builder's bf16-vs-fp32 distance."""
    for spec, net, x, y, x_nhwc in pair_cases(args):
        _, _, ev, tr, tl, after, w0 = torch_run(net, x, y, SGD)
        _, _, bev, btr, btl, bafter, _ = torch_run(net, x, y, SGD, low=torch.bfloat16)
        kev, ktr, ktl, kafter = keras_run(net, w0, x_nhwc, y.numpy(), spec["classes"], SGD, precision="bf16")
        ns = [n for n, _ in benchlib.params(net) if n in kafter]

        def flat(a):
            return np.concatenate([a[n].ravel() for n in ns])

        tag = f"{spec['name']}/{net['head']}"
        for what, k, b, f in (("eval logits", kev, bev, ev), ("train logits", ktr, btr, tr), ("sgd1 loss", [ktl], [btl], [tl]),
                              (f"sgd1 {len(ns)} tensors", flat(kafter), flat(bafter), flat(after))):
            n = noise(b, f)
            diffs.add(tag, "bf16 keras vs torch @64px×8: " + what, k, b, n, factor=NOISE_BF16)
            if n == 0 or noise(k, f) == 0:  # bf16 must change the numbers in both builders
                diffs.rows.append((tag, "bf16 = fp32: " + what, 0.0, 0.0, n, "FAIL"))
                diffs.failed = True
        print(f"{tag} at 64 px in bf16: {len(net['layers'])} layers", file=sys.stderr)


def f64(diffs, tag, net, w0, x_nhwc, y, classes, sgd, torch32, torch64):
    """The Keras builder in float64 against the torch builder in float64, from the same start:
    rounding no longer hides a difference in what the two compute (F64 bounds). The noise of
    a quantity is its float32 noise scaled by 2^-29, float64's epsilon over float32's: the
    conditioning is the same, the rounding 2^29 times finer."""
    kev, ktr, ktl, kafter = keras_run(net, w0, x_nhwc, np.asarray(y), classes, sgd, dtype="float64")
    ns = [n for n, _ in benchlib.params(net) if n in kafter]
    got = (kev, ktr, [ktl], np.concatenate([kafter[n].ravel() for n in ns]))
    want, f32 = [(ev, tr, [tl], np.concatenate([after[n].ravel() for n in ns])) for ev, tr, tl, after in (torch64, torch32)]
    for what, g, w, w32 in zip(("eval logits", "train logits", "sgd1 loss", f"sgd1 {len(ns)} tensors"), got, want, f32):
        diffs.add(tag, "float64 keras vs torch: " + what, g, w, noise(w32, w) * 2.0**-29, bound=F64)


def noise(a, b):
    """max |a − b|: a float32 result against the float64 one."""
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixture", default=FIXTURE)
    ap.add_argument("--nets", help="read the descriptions here (describe's file names) instead of asking scripts/bench/export")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parts", default="fixture,pair,bf16", help="comma list of fixture (1), pair (2), bf16 (3)")
    args = ap.parse_args()
    parts = args.parts.split(",")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    diffs = Diffs()
    if "fixture" in parts:
        check_fixture(args, diffs)
    if "pair" in parts:
        check_pair(args, diffs)
    if "bf16" in parts:
        check_bf16(args, diffs)
    diffs.print()
    if diffs.failed:
        sys.exit(f"check_builders: a difference exceeds {ABS:g} + {REL:g}·|want| + {NOISE:g}·(fp32 noise)")


if __name__ == "__main__":
    main()
