#!/usr/bin/env python3
"""Summarise a scripts/bench.sh run folder into one table (and the raw JSON beside it).

    python scripts/bench/table.py --run-dir DIR [--doc docs/benchmarks.md --raw docs/bench]

Reads DIR/runs.tsv (one line per process), the run records it names (fwbench.run/v1 from
`fwbench train --json`, the same fields plus "driver": "python" from the reference
scripts), the Go runs' GODEBUG=gctrace=1 logs, DIR/peak-gemm.json, the profiles and
DIR/settings.txt. Prints the markdown table and writes DIR/summary.json (always); with
--doc it replaces the text between the markers <!-- bench:table:begin --> and
<!-- bench:table:end --> of that file, and with --raw it writes one JSON per cell (every run
record and its context), peak-gemm.json, profiles.json and summary.json there too.

summary.json (schema fwbench.bench-summary/v1) holds "rows": one per cell, precision and
framework (in the table's order), with the table's numbers: "cell", "framework",
"precision", "model", "head", "image_size", "batch_size", "go_step_p50" and
"python_step_p50" (seconds), "ratio_median" (Go/Python, median over repeats) with
"ratio_min"/"ratio_max", "quiet_ratio_median" over "quiet_pairs", "bare_ratio_median",
"go_step_vs_fp32" / "python_step_vs_fp32" (this precision's step p50 over the same cell's
fp32 step p50, null without an fp32 row), images/s, MFU, RSS, loader, GC and load figures;
"fairness": one entry per Go/Python pair (same first batch, same weights, same precision
in both records as asked, initial and mean training losses); "settings" (settings.txt)
and "peak_gemm_gflops". A value that could not be measured is null.

Statistics: a run's step time is its record's step_seconds.p50 (the median of its timed
steps); a cell's step time is the median of that over repeats. The Go/Python ratio is
formed per repeat (repeat r's Go run against repeat r's Python run, which ran next to it)
and shown as the median with its min–max over repeats. MFU = train FLOPs of one step
(model.Net.TrainFLOPs, from the export manifest) / step time / measured peak FP32 GEMM FLOP/s.
Each row names its model and head (from the cell's export manifest; scripts/bench.sh's
BENCH_MODEL and BENCH_HEAD) and its precision (runs.tsv's column, BENCH_PRECISION; fp32 for
run folders written before it).
"""

import argparse
import csv
import json
import os
import re
import statistics
import sys

GC_RE = re.compile(r"^gc (\d+) @([\d.]+)s [\d.]+%: ([\d.]+)\+([\d.]+)\+([\d.]+) ms clock, "
                   r"([\d.]+)\+([\d.]+)/([\d.]+)/([\d.]+)\+([\d.]+) ms cpu")
QUIET = 0.10  # a run is "quiet" when other processes used at most 10% of the machine during it


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def gc_stats(err_path, wall, train_seconds):
    """GC cycles of a Go run from its gctrace lines. The training loop's window is taken as
    the last train_seconds of the process before exit (approximate: the process wall time
    includes loading the native libraries before the Go runtime starts)."""
    cycles = []
    try:
        with open(err_path) as f:
            for line in f:
                m = GC_RE.match(line)
                if m:
                    at = float(m.group(2))
                    stw = float(m.group(3)) + float(m.group(5))  # sweep termination + mark termination
                    cpu = sum(float(m.group(i)) for i in range(6, 11))  # GC CPU: STW + assist/background/idle mark
                    cycles.append((at, stw, cpu))
    except OSError:
        return None
    start = max(0.0, wall - train_seconds - 0.5) if wall and train_seconds else 0.0
    during = [c for c in cycles if c[0] >= start]
    return {
        "cycles": len(cycles),
        "cycles_in_training": len(during),
        "max_stw_ms": max((c[1] for c in cycles), default=0.0),
        "stw_ms_in_training": sum(c[1] for c in during),
        "gc_cpu_ms_in_training": sum(c[2] for c in during),
    }


def read_settings(path):
    s = {}
    try:
        with open(path) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    s[k] = v
    except OSError:
        pass
    return s


def med(xs):
    return statistics.median(xs) if xs else None


def pct(x):
    return None if x is None else 100 * x


def fmt(x, spec, none="–"):
    return none if x is None else format(x, spec)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", required=True)
    p.add_argument("--doc")
    p.add_argument("--raw")
    p.add_argument("--section", default="table", help="marker name: <!-- bench:NAME:begin --> ... end")
    args = p.parse_args()
    begin, end = f"<!-- bench:{args.section}:begin -->", f"<!-- bench:{args.section}:end -->"
    d = args.run_dir
    settings = read_settings(os.path.join(d, "settings.txt"))
    peak = load_json(os.path.join(d, "peak-gemm.json"))
    peak_flops = peak["peak_gflops"] * 1e9 if peak else None

    runs = []
    with open(os.path.join(d, "runs.tsv")) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            rec = load_json(row["json"]) if row["status"] == "ok" else None
            row["record"] = rec
            row["precision"] = row.get("precision") or "fp32"
            row["repeat"] = int(row["repeat"])
            row["wall_seconds"] = float(row["wall_seconds"])
            if row["driver"] == "go" and rec:
                row["gc"] = gc_stats(row["gc_log"], row["wall_seconds"], rec.get("total_seconds", 0))
            runs.append(row)

    cells, precisions = [], []
    for r in runs:
        if r["cell"] not in cells:
            cells.append(r["cell"])
        if r["precision"] not in precisions:
            precisions.append(r["precision"])

    rows, raw_cells, profiles, checks = [], {}, {}, []
    for cell in cells:
        man = load_json(os.path.join(d, cell, "export", "manifest.json")) or {}
        flops = man.get("train_flops_per_step")
        cell_runs = [r for r in runs if r["cell"] == cell]
        raw_cells[cell] = {"cell": cell, "manifest": man, "runs": [
            {k: r.get(k) for k in ("framework", "precision", "driver", "repeat", "status", "wall_seconds", "load1_before",
                                   "load1_after", "busy_before", "others_cpu")}
            | {"gc": r.get("gc"), "record": r["record"]} for r in cell_runs]}
        for prec, fw in ((p, f) for p in precisions for f in ("torch", "tensorflow")):
            mine = [r for r in cell_runs if r["framework"] == fw and r["precision"] == prec]
            go = {r["repeat"]: r for r in mine if r["driver"] == "go" and r["record"]}
            py = {r["repeat"]: r for r in mine if r["driver"] == "python" and r["record"]}
            bare = {r["repeat"]: r for r in mine if r["driver"] == "go-bare" and r["record"]}
            tried = mine
            if not tried:
                continue
            g50 = [r["record"]["step_seconds"]["p50"] for r in go.values()]
            p50 = [r["record"]["step_seconds"]["p50"] for r in py.values()]
            ratios = [go[k]["record"]["step_seconds"]["p50"] / py[k]["record"]["step_seconds"]["p50"]
                      for k in sorted(go) if k in py and py[k]["record"]["step_seconds"]["p50"] > 0]
            # Pairs in which neither run shared the machine with more than QUIET of other CPU use.
            def quiet(r):
                return r.get("others_cpu") not in (None, "") and float(r["others_cpu"]) <= QUIET
            qratios = [go[k]["record"]["step_seconds"]["p50"] / py[k]["record"]["step_seconds"]["p50"]
                       for k in sorted(go) if k in py and quiet(go[k]) and quiet(py[k])]
            bratios = [bare[k]["record"]["step_seconds"]["p50"] / py[k]["record"]["step_seconds"]["p50"]
                       for k in sorted(bare) if k in py and py[k]["record"]["step_seconds"]["p50"] > 0]
            gips = med([r["record"]["images_per_second"] for r in go.values()])
            pips = med([r["record"]["images_per_second"] for r in py.values()])
            grss = med([r["record"]["peak_rss_bytes"] for r in go.values()])
            prss = med([r["record"]["peak_rss_bytes"] for r in py.values()])
            stall = [r["record"].get("data_wait_fraction", 0) for r in go.values()]
            gcs = [r["gc"] for r in go.values() if r.get("gc")]
            steps_timed = [len(r["record"]["step_times_seconds"]) for r in go.values()]
            loads = [float(r["load1_before"]) for r in tried]
            others = [float(r["others_cpu"]) for r in tried if r.get("others_cpu") not in (None, "")]
            row = {
                "cell": cell, "framework": fw, "precision": prec, "model": man.get("model"), "head": man.get("head"),
                "image_size": man.get("image_size"), "batch_size": man.get("batch_size"),
                "warmup_steps": next((r["record"]["warmup_steps"] for r in go.values()), None),
                "timed_steps": med(steps_timed), "repeats_go": len(go), "repeats_python": len(py),
                "failed": [f"{r['driver']} r{r['repeat']}" for r in tried if r["status"] != "ok"],
                "go_step_p50": med(g50), "python_step_p50": med(p50),
                "go_step_p50_min_max": [min(g50), max(g50)] if g50 else None,
                "python_step_p50_min_max": [min(p50), max(p50)] if p50 else None,
                "ratio_median": med(ratios), "ratio_min": min(ratios) if ratios else None,
                "ratio_max": max(ratios) if ratios else None,
                "bare_step_p50": med([r["record"]["step_seconds"]["p50"] for r in bare.values()]),
                "bare_ratio_median": med(bratios), "bare_ratio_min_max": [min(bratios), max(bratios)] if bratios else None,
                "bare_gc_cycles_in_timed_steps_max": max((r["record"].get("go_gc", {}).get("cycles_in_timed_steps", 0)
                                                          for r in bare.values()), default=None),
                "quiet_pairs": len(qratios), "quiet_ratio_median": med(qratios),
                "quiet_ratio_min_max": [min(qratios), max(qratios)] if qratios else None, "ratio_of_medians": (med(g50) / med(p50)) if g50 and p50 else None,
                "go_images_per_second": gips, "python_images_per_second": pips,
                "go_peak_rss_bytes": grss, "python_peak_rss_bytes": prss,
                "rss_ratio": (grss / prss) if grss and prss else None,
                "train_flops_per_step": flops,
                "mfu_go": (flops / med(g50) / peak_flops) if flops and g50 and peak_flops else None,
                "mfu_python": (flops / med(p50) / peak_flops) if flops and p50 and peak_flops else None,
                "loader_cpu_seconds_per_batch": man.get("loader_cpu_seconds_per_batch"),
                "loader_cpu_share": (man["loader_cpu_seconds_per_batch"] / (med(g50) * int(settings.get("threads", "2"))))
                if man.get("loader_cpu_seconds_per_batch") and g50 else None,
                "data_stall_go_median": med(stall), "data_stall_go_max": max(stall) if stall else None,
                "gc_cycles_in_training_max": max((g["cycles_in_training"] for g in gcs), default=None),
                "gc_stw_ms_in_training_max": max((g["stw_ms_in_training"] for g in gcs), default=None),
                "gc_max_stw_ms": max((g["max_stw_ms"] for g in gcs), default=None),
                "gc_cpu_ms_in_training_max": max((g["gc_cpu_ms_in_training"] for g in gcs), default=None),
                "load1_min_max": [min(loads), max(loads)] if loads else None,
                "others_cpu_max": max(others) if others else None,
                "others_cpu_median": med(others),
            }
            rows.append(row)
            # Fairness evidence: same first batch, same weights, same losses.
            for k in sorted(go):
                if k not in py:
                    continue
                g, q = go[k]["record"], py[k]["record"]
                gl = g["epochs"][0]["train_loss"] if g.get("epochs") else None
                ql = q["epochs"][0]["train_loss"] if q.get("epochs") else None
                checks.append({
                    "cell": cell, "framework": fw, "precision": prec, "repeat": k,
                    # Both records say they ran in the precision asked for (a driver that ignored
                    # --precision would time the wrong thing).
                    "same_precision": g.get("precision") == q.get("precision") == prec
                    and (g.get("settings") or {}).get("precision") == (q.get("settings") or {}).get("precision") == prec,
                    "precision_go": g.get("precision"), "precision_python": q.get("precision"),
                    "same_first_batch": g.get("first_batch_sha256") == q.get("first_batch_sha256") == man.get("batch_sha256", [None])[0],
                    "same_weights": g.get("initial_weights_sha256") == q.get("initial_weights_sha256") == man.get("weights_sha256"),
                    "initial_loss_go": g.get("initial_loss"), "initial_loss_python": q.get("initial_loss"),
                    "train_loss_go": gl, "train_loss_python": ql,
                })
            prof = load_json(os.path.join(d, cell, f"{fw}-{prec}-python-profile.json"))
            if prof is None and prec == "fp32":
                prof = load_json(os.path.join(d, cell, f"{fw}-python-profile.json"))  # run folders before precisions
            if prof:
                profiles[f"{cell}-{fw}" if prec == "fp32" else f"{cell}-{prec}-{fw}"] = prof | {"cell": cell, "precision": prec}

    # Each precision's step time against fp32's in the same cell and framework (bf16 vs fp32).
    fp32 = {(r["cell"], r["framework"]): r for r in rows if r["precision"] == "fp32"}
    for r in rows:
        base = fp32.get((r["cell"], r["framework"]))
        for side in ("go", "python"):
            a, b = r[f"{side}_step_p50"], base and base[f"{side}_step_p50"]
            r[f"{side}_step_vs_fp32"] = a / b if a is not None and b else None

    table = render(rows, checks, profiles, peak, settings)
    print(table)
    summary = {"schema": "fwbench.bench-summary/v1", "settings": settings,
               "peak_gemm_gflops": peak and peak["peak_gflops"], "rows": rows, "fairness": checks}
    write(os.path.join(d, "summary.json"), summary)
    if args.raw:
        os.makedirs(args.raw, exist_ok=True)
        for cell, obj in raw_cells.items():
            write(os.path.join(args.raw, f"cpu-{cell}.json"), obj)
        if peak:
            write(os.path.join(args.raw, "peak-gemm.json"), peak)
        write(os.path.join(args.raw, "profiles.json"), profiles)
        write(os.path.join(args.raw, "summary.json"), summary)
    if args.doc:
        with open(args.doc) as f:
            text = f.read()
        if begin not in text or end not in text:
            sys.exit(f"table: {args.doc} lacks the markers {begin} / {end}")
        a, rest = text.split(begin, 1)
        _, b = rest.split(end, 1)
        with open(args.doc, "w") as f:
            f.write(a + begin + "\n" + table + "\n" + end + b)


def write(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def model_name(r):
    """The row's model and head, e.g. "vgg16 (flatten)", "resnet18 (torchvision)"."""
    if not r.get("model"):
        return "–"
    return f"{r['model']} ({r['head']})" if r.get("head") else r["model"]


def render(rows, checks, profiles, peak, settings):
    out = []
    w = out.append
    w(f"Measured {settings.get('date', '?')} on {settings.get('cpu', '?')}, {settings.get('cores', '?')} cores; "
      f"{settings.get('threads', '?')} intra-op + {settings.get('interop_threads', '?')} inter-op threads in every run; "
      f"load average at start {settings.get('load_start', '?')}, at end {settings.get('load_end', '?')}; "
      f"fwbench {settings.get('fwbench_commit', '?')}{' (with uncommitted changes)' if settings.get('worktree_dirty') == 'yes' else ''}.")
    w("")
    if peak:
        parts = []
        for r in peak["results"]:
            best = max(r["sizes"].items(), key=lambda kv: kv[1]["gflops_best"])
            parts.append(f"{r['framework']} {best[1]['gflops_best']:.1f} GFLOP/s (N={best[0]})")
        w(f"Peak FP32 GEMM (best N×N matmul, 2·N³ FLOP): {'; '.join(parts)}. MFU below divides by the larger, "
          f"{peak['peak_gflops']:.1f} GFLOP/s.")
        w("")
    has_bare = any(r["bare_ratio_median"] is not None for r in rows)
    w("| device | model | S | batch | precision | framework | steps × repeats | Go step p50 (s) | Python step p50 (s) "
      "| **Go/Python** median (min–max) | quiet pairs: median |" + (" bare Go driver/Python |" if has_bare else "")
      + " images/s Go / Py | MFU Go / Py |")
    w("|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if has_bare else "") + "---|---|")
    for r in rows:
        steps = f"{r['warmup_steps']}+{fmt(r['timed_steps'], '.0f')} × {r['repeats_go']}/{r['repeats_python']}"
        ratio = (f"**{r['ratio_median']:.3f}** ({r['ratio_min']:.3f}–{r['ratio_max']:.3f})"
                 if r["ratio_median"] is not None else "–")
        fail = f" (failed: {', '.join(r['failed'])})" if r["failed"] else ""
        bare = ""
        if has_bare:
            mm = r["bare_ratio_min_max"]
            bare = (f" {r['bare_ratio_median']:.3f} ({mm[0]:.3f}–{mm[1]:.3f}) |" if mm else " – |")
        w(f"| CPU | {model_name(r)} | {r['image_size']} | {r['batch_size']} | {r['precision']} | {r['framework']}{fail} | {steps} "
          f"| {fmt(r['go_step_p50'], '.3f')} | {fmt(r['python_step_p50'], '.3f')} | {ratio} "
          f"| {r['quiet_pairs']}: {fmt(r['quiet_ratio_median'], '.3f')} |{bare} "
          f"{fmt(r['go_images_per_second'], '.2f')} / {fmt(r['python_images_per_second'], '.2f')} "
          f"| {fmt(pct(r['mfu_go']), '.1f')}% / {fmt(pct(r['mfu_python']), '.1f')}% |")
    w("| GPU | – | – | – | – | both | – | not run: no GPU was lent to this session |" + " |" * (6 if has_bare else 5))
    w("")
    w("| model | S | batch | precision | framework | peak RSS Go / Py (MiB) | RSS ratio | data stall Go (median, max) "
      "| Go loader CPU per batch (share of a step's CPU) | GC in a Go training loop (max): cycles, STW ms, GC CPU ms "
      "| others' CPU during runs (median, max) |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        w(f"| {model_name(r)} | {r['image_size']} | {r['batch_size']} | {r['precision']} | {r['framework']} "
          f"| {fmt(r['go_peak_rss_bytes'] and r['go_peak_rss_bytes'] / 2**20, '.0f')} / "
          f"{fmt(r['python_peak_rss_bytes'] and r['python_peak_rss_bytes'] / 2**20, '.0f')} "
          f"| {fmt(r['rss_ratio'], '.2f')} "
          f"| {fmt(pct(r['data_stall_go_median']), '.3f')}%, {fmt(pct(r['data_stall_go_max']), '.3f')}% "
          f"| {fmt(r['loader_cpu_seconds_per_batch'] and 1000 * r['loader_cpu_seconds_per_batch'], '.0f')} ms "
          f"({fmt(pct(r['loader_cpu_share']), '.1f')}%) "
          f"| {fmt(r['gc_cycles_in_training_max'], 'd')}, {fmt(r['gc_stw_ms_in_training_max'], '.1f')}, "
          f"{fmt(r['gc_cpu_ms_in_training_max'], '.0f')} "
          f"| {fmt(pct(r['others_cpu_median']), '.0f')}%, {fmt(pct(r['others_cpu_max']), '.0f')}% |")
    w("")
    w("Steps: warm-up + timed steps per run × Go/Python repeats. Step p50: the median over repeats of each run's "
      "median step. Go/Python below 1 means the Go driver is faster; the ratio is taken per repeat (each Go run "
      "against the Python run next to it)" + (", and 'bare Go driver' is scripts/bench/bare: the same driver fed "
      "the exported batches from memory, without `fwbench train`'s loader and loop" if has_bare else "") + ". "
      "Data stall: the share of step time the Go loop waited for its loader. Go loader CPU: the CPU time "
      "`fwbench train`'s loader goroutines spend making one batch (decode, resize, normalise; measured alone by "
      "scripts/bench/export), as a share of the CPU a step has (step time × threads): work that competes with "
      "the framework's threads, since the Python runs get their batches ready-made. GC: the most GC cycles any "
      "Go run of the row started during its training loop, their stop-the-world time and the CPU time the GC used "
      "(GODEBUG=gctrace=1; the loop's window is inferred from the process's wall time, so a cycle just before it may count). "
      "Others' CPU: the CPU time other processes on the machine used while a run of the row ran, as a share of the "
      "machine (wall time × cores); near 0% means a quiet machine; quiet pairs are the repeats in which both runs "
      f"had at most {100 * QUIET:.0f}% of it.")
    others = [r for r in rows if r["precision"] != "fp32"]
    if others:
        w("")
        w("Each precision against fp32 (step p50 of the row / step p50 of the same cell's fp32 row; below 1 is "
          "faster than fp32):")
        w("")
        w("| model | S | batch | precision | framework | Go: step p50 (s), vs fp32 | Python: step p50 (s), vs fp32 "
          "| Go/Python in this precision |")
        w("|---|---|---|---|---|---|---|---|")
        for r in others:
            w(f"| {model_name(r)} | {r['image_size']} | {r['batch_size']} | {r['precision']} | {r['framework']} "
              f"| {fmt(r['go_step_p50'], '.3f')}, {fmt(r['go_step_vs_fp32'], '.3f')} "
              f"| {fmt(r['python_step_p50'], '.3f')}, {fmt(r['python_step_vs_fp32'], '.3f')} "
              f"| {fmt(r['ratio_median'], '.3f')} |")
    if checks:
        ok_batch = all(c["same_first_batch"] for c in checks)
        ok_w = all(c["same_weights"] for c in checks)
        ok_p = all(c["same_precision"] for c in checks)
        dl = max((abs(c["initial_loss_go"] - c["initial_loss_python"]) for c in checks
                  if c["initial_loss_go"] is not None and c["initial_loss_python"] is not None), default=None)
        dt = max((abs(c["train_loss_go"] - c["train_loss_python"]) for c in checks
                  if c["train_loss_go"] is not None and c["train_loss_python"] is not None), default=None)
        w("")
        w(f"Fairness checks over {len(checks)} Go/Python pairs: same first batch (SHA-256) in every pair: "
          f"{'yes' if ok_batch else 'NO'}; same initial weights file (SHA-256): {'yes' if ok_w else 'NO'}; "
          f"both records in the precision asked for (top-level and settings): {'yes' if ok_p else 'NO'}; "
          f"largest |initial loss Go − Python| {fmt(dl, '.2e')}; largest |mean training loss Go − Python| "
          f"{fmt(dt, '.2e')} (both sides multiply the dropout masks the Go exporter wrote with model.DropoutMask, "
          f"and build the model from the exporter's description of model.Net).")
    if profiles:
        w("")
        w("Where a Python step's time goes (each framework's own profiler, one extra step after the run; "
          "op time summed over threads, so TF's can exceed the wall time when inter-op threads overlap ops):")
        w("")
        w("| cell | precision | framework | profiler | step wall (s) | conv | linear | optimizer | other |")
        w("|---|---|---|---|---|---|---|---|---|")
        for k, pr in profiles.items():
            s = pr["split_us"]
            tot = sum(s.values()) or 1
            cell, fw, prec = pr.get("cell") or k.rsplit("-", 1)[0], pr["framework"], pr.get("precision", "fp32")
            cols = " | ".join(f"{s.get(c, 0) / 1e6:.3f} s ({100 * s.get(c, 0) / tot:.0f}%)"
                              for c in ("conv", "linear", "optimizer", "other"))
            w(f"| {cell} | {prec} | {fw} | {pr['profiler']} | {pr['wall_seconds']:.3f} | {cols} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
