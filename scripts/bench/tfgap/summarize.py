#!/usr/bin/env python3
"""Compares one VGG16 training step of tfrun (tfdump's files in TFRUN_DIR) with Keras'
(keras_trace.py's files in KERAS_DIR) and prints a Markdown report:

- the ConfigProtos (tfrun's session, Keras' eager context);
- the op types that ran, with how many times (tfrun: the traced step's step stats over its
  partition graph, i.e. after grappler and the oneDNN rewrite; Keras: the XPlane op events of
  one profiled step);
- which tensor each ReluGrad reads (the graphs before grappler): the Relu's output (Python's
  gradient) or its input (TensorFlow's C++ gradient, which tfrun's TF_AddGradients uses);
- the step's timeline: when the optimizer updates run, and the "tail", the time from the end
  of the last gradient op to the end of the step, during which only updates run;
- minor page faults per untraced step.

Times come from a loaded 2-core machine and from two different tracers (step stats, XPlane):
read them as shares of each side's own step, not as absolute figures.

    python scripts/bench/tfgap/summarize.py TFRUN_DIR KERAS_DIR
"""

import collections
import json
import os
import sys

from tensorflow.core.framework import graph_pb2
from tensorflow.core.protobuf import config_pb2


def load(path, msg):
    with open(path, "rb") as f:
        msg.ParseFromString(f.read())
    return msg


def tfrun_events(d):
    """[start_ms, dur_ms, node, op] of the traced Session.Run (step stats), start from 0."""
    md = load(os.path.join(d, "tfrun.runmeta.pb"), config_pb2.RunMetadata())
    ops = {n.name: n.op for g in md.partition_graphs for n in g.node}
    ev = []
    for dev in md.step_stats.dev_stats:
        for ns in dev.node_stats:
            s = ns.all_start_nanos or ns.all_start_micros * 1000
            dur = ns.op_end_rel_nanos or ns.op_end_rel_micros * 1000
            ev.append([s / 1e6, dur / 1e6, ns.node_name, ops.get(ns.node_name, "?")])
    t0 = min(e[0] for e in ev)
    for e in ev:
        e[0] -= t0
    return sorted(ev)


def keras_events(d):
    with open(os.path.join(d, "keras.timeline.json")) as f:
        t = json.load(f)
    return sorted([s / 1e3, dur / 1e3, n, o] for s, dur, n, o in t["events"])


def is_update(name, op):
    """An op of the optimizer's updates: tfrun's ResourceApply* ops, Keras' arithmetic and
    assignments under sgd/ (not the reads of the learning rate and momentum)."""
    if op in ("ReadVariableOp", "VarHandleOp", "Const", "Identity"):
        return False
    return op.startswith("ResourceApply") or name.startswith("sgd/")


def timeline(ev):
    end = max(s + d for s, d, _, _ in ev)
    grads = [s + d for s, d, n, o in ev if not is_update(n, o) and d > 0]
    last_grad = max(grads)
    upd = [(s, d, n, o) for s, d, n, o in ev if is_update(n, o)]
    big = max(upd, key=lambda e: e[1]) if upd else None
    return end, last_grad, upd, big


def relu_grad_sources(path):
    g = load(path, graph_pb2.GraphDef())
    by = {n.name: n for n in g.node}
    c = collections.Counter()
    for n in g.node:
        if n.op in ("ReluGrad", "Relu6Grad"):
            src = by.get(n.input[1].split(":")[0].lstrip("^"))
            c[src.op if src else "?"] += 1
    return c


def faults(path):
    with open(path) as f:
        return json.load(f)["minor_faults_per_step"]


def main():
    td, kd = sys.argv[1], sys.argv[2]
    print("# tfgap: one VGG16 training step, tfrun (Session.Run) against Keras (tf.function)\n")
    print(f"tfrun: {td}; Keras: {kd}\n")
    for side, path in (("tfrun session", os.path.join(td, "tfrun.config.pb")), ("Keras context", os.path.join(kd, "keras.config.pb"))):
        cp = load(path, config_pb2.ConfigProto())
        print(f"## {side} ConfigProto\n\n```\n{cp}```\n")
    te, ke = tfrun_events(td), keras_events(kd)
    ct, ck = collections.Counter(e[3] for e in te), collections.Counter(e[3] for e in ke)
    tt, kt = collections.Counter(), collections.Counter()
    for s, d, n, o in te:
        tt[o] += d
    for s, d, n, o in ke:
        kt[o] += d
    tsum, ksum = sum(tt.values()), sum(kt.values())
    skip = {"Const", "VarHandleOp", "_Arg", "_Retval", "NoOp"}
    print("## Ops that ran (executions; share of the summed op time of its own side)\n")
    print("| op | tfrun | Keras |\n|---|---|---|")
    for op in sorted((set(ct) | set(ck)) - skip, key=lambda o: -(tt[o] / tsum + kt[o] / ksum)):
        mark = "" if ct[op] == ck[op] else " ≠"
        print(f"| {op}{mark} | {ct[op]} ({100 * tt[op] / tsum:.1f}%) | {ck[op]} ({100 * kt[op] / ksum:.1f}%) |")
    print()
    print("## What ReluGrad reads (graphs before grappler)\n")
    print(f"- tfrun: {dict(relu_grad_sources(os.path.join(td, 'tfrun.graphdef.pb')))} "
          "(the graph the session got: after tfgapDef's rewrite when TFGAP_RELU_OUTPUT=1 was set)")
    print(f"- Keras: {dict(relu_grad_sources(os.path.join(kd, 'keras.graphdef.pb')))}\n")
    print("## Timeline of the traced step\n")
    print("| side | step span (ms) | end of last gradient op (ms) | tail: only updates run (ms, % of span) | "
          "updates | largest update: start (% of span), duration (ms) |\n|---|---|---|---|---|---|")
    for side, ev in (("tfrun", te), ("Keras", ke)):
        end, lg, upd, big = timeline(ev)
        first = min(s for s, _, _, _ in upd) if upd else 0
        bs = f"{big[2]} ({big[3]}): {100 * big[0] / end:.0f}%, {big[1]:.0f}" if big else "–"
        print(f"| {side} | {end:.0f} | {lg:.0f} | {end - lg:.0f} ({100 * (end - lg) / end:.1f}%) | "
              f"{len(upd)} ops, first at {100 * first / end:.0f}% | {bs} |")
    print()
    print("## Minor page faults per untraced step (4 KiB pages of fresh memory)\n")
    print(f"- tfrun: {faults(os.path.join(td, 'tfrun.faults.json'))}")
    print(f"- Keras: {faults(os.path.join(kd, 'keras.faults.json'))}")


if __name__ == "__main__":
    main()
