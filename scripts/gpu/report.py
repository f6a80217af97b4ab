#!/usr/bin/env python3
"""report.py: turn what scripts/gpu/run.sh left (its gpu-out folder, or the gpu-results.tgz the
device returned) into the GPU section of docs/benchmarks.md and raw JSON under docs/bench/.

    python3 scripts/gpu/report.py --results gpu-results.tgz --doc docs/benchmarks.md --raw docs/bench
    python3 scripts/gpu/report.py --results gpu-out            # print the section only

Per grid configuration (run.sh part 2: VGG16, batch, precision, channels_last, cuDNN autotune)
one row: Go's and Python's images/s over the timed steps, their ratio (Go / Python: above 1 means
Go is faster), step p50 and p95 of each, peak GPU memory (Go: NVML's peak for the process and
libtorch's allocator peak; Python: the allocator peak) and Go's data stall (data_wait_fraction:
the share of the timed steps' wall time the training loop waited for the loader). Below the
table: the machine, the tests' verdicts, the loader alone, the bf16 parity check, the
out-of-memory check and the NCCL run. Every run record is copied to RAW/gpu-<config>-<driver>.json
and the rows to RAW/gpu-summary.json (schema fwbench.gpu-summary/v1). Uses only the standard
library.
"""
import argparse
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile

BEGIN, END = "<!-- bench:gpu:begin -->", "<!-- bench:gpu:end -->"


def read(folder, name, default=""):
    p = os.path.join(folder, name)
    if not os.path.exists(p):
        return default
    with open(p, encoding="utf-8", errors="replace") as f:
        return f.read()


def load(folder, name):
    try:
        with open(os.path.join(folder, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def describe(config):
    """b128-bf16-cl-bench -> (128, "bf16", channels_last, autotune)."""
    parts = config.split("-")
    return int(parts[0][1:]), parts[1], "cl" in parts[2:], "bench" in parts[2:]


def mib(v):
    return "–" if v is None else f"{v / 2**20:,.0f}"


def rows_of(folder):
    grid = [line.split("\t") for line in read(folder, "grid.tsv").splitlines()[1:] if line.strip()]
    configs = list(dict.fromkeys(g[0] for g in grid))
    rows = []
    for c in configs:
        b, prec, cl, bench = describe(c)
        go, py = load(folder, f"go-{c}.json"), load(folder, f"python-{c}.json")
        row = {"config": c, "batch": b, "precision": prec, "channels_last": cl, "cudnn_benchmark": bench,
               "go": None, "python": None}
        for side, rec in (("go", go), ("python", py)):
            if rec is None or rec.get("error"):
                continue
            row[side] = {
                "device": rec.get("device"),
                "images_per_second": rec.get("images_per_second"),
                "step_p50": rec.get("step_seconds", {}).get("p50"),
                "step_p95": rec.get("step_seconds", {}).get("p95"),
                "peak_gpu_bytes": rec.get("peak_gpu_bytes"),
                "peak_gpu_allocator_bytes": rec.get("peak_gpu_allocator_bytes"),
                "data_wait_fraction": rec.get("data_wait_fraction"),
                "initial_loss": rec.get("initial_loss"),
                "first_batch_sha256": rec.get("first_batch_sha256"),
                "settings": rec.get("settings", {}),
            }
        if row["go"] and row["python"] and row["python"]["images_per_second"]:
            row["go_over_python"] = row["go"]["images_per_second"] / row["python"]["images_per_second"]
            row["same_first_batch"] = row["go"]["first_batch_sha256"] == row["python"]["first_batch_sha256"]
        rows.append(row)
    return rows


def fmt(v, spec):
    return "–" if v is None else format(v, spec)


def section(folder, rows):
    machine = read(folder, "machine.txt").strip().splitlines()
    out = [BEGIN, "", "Written by `scripts/gpu/report.py` from `scripts/gpu/run.sh`'s results.", ""]
    out += ["Machine: " + "; ".join(m.strip() for m in machine if m.strip()) + ".", ""]
    out += ["| batch | precision | channels_last | autotune | Go images/s | Python images/s | Go/Python | "
            "Go step p50 / p95 ms | Python step p50 / p95 ms | Go peak GPU MiB (NVML / allocator) | "
            "Python allocator MiB | Go data stall |",
            "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        g, p = r["go"] or {}, r["python"] or {}
        ms = lambda s, k: fmt(None if s.get(k) is None else 1000 * s[k], ".1f")
        out.append(
            f"| {r['batch']} | {r['precision']} | {'on' if r['channels_last'] else 'off'} | "
            f"{'on' if r['cudnn_benchmark'] else 'off'} | {fmt(g.get('images_per_second'), ',.0f')} | "
            f"{fmt(p.get('images_per_second'), ',.0f')} | {fmt(r.get('go_over_python'), '.3f')} | "
            f"{ms(g, 'step_p50')} / {ms(g, 'step_p95')} | {ms(p, 'step_p50')} / {ms(p, 'step_p95')} | "
            f"{mib(g.get('peak_gpu_bytes'))} / {mib(g.get('peak_gpu_allocator_bytes'))} | "
            f"{mib(p.get('peak_gpu_allocator_bytes'))} | "
            f"{fmt(None if g.get('data_wait_fraction') is None else 100 * g['data_wait_fraction'], '.2f')}% |")
    tests = re.findall(r"^--- (PASS|FAIL|SKIP): (\S+)", read(folder, "cuda-tests.log"), re.M)
    out += ["", "Tests on the device: " + (", ".join(f"{n} {v}" for v, n in tests) or "none ran") + "."]
    bench = [line for line in read(folder, "loader.txt").splitlines() if line.startswith("Benchmark")]
    if bench:
        out += ["", "The Go loader alone (dataset `BenchmarkLoader224`, 256 px JPEGs to 224 px, batch 16):", "```"]
        out += bench + ["```"]
    for name, title in (("parity.txt", "bf16 parity (first batch, GPU bf16 against CPU fp32)"),
                        ("oom.txt", "CUDA out of memory (VGG16, 448 px, batch 1024)"),
                        ("nccl.log", "Data-parallel on NCCL, world size 1")):
        text = read(folder, name).strip().splitlines()
        if text:
            out += ["", f"{title}:", "```"] + text[-3:] + ["```"]
    nccl = load(folder, "go-nccl.json")
    if nccl:
        out += ["", f"NCCL run record: backend {nccl.get('backend')}, world size {nccl.get('world_size')}, "
                    f"{fmt(nccl.get('images_per_second'), ',.0f')} images/s, communication "
                    f"{fmt(None if nccl.get('comm_seconds_per_step') is None else 1000 * nccl['comm_seconds_per_step'], '.2f')} ms per step."]
    out += ["", END]
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", required=True, help="run.sh's output folder or its gpu-results.tgz")
    p.add_argument("--doc", help="markdown file whose bench:gpu section is replaced")
    p.add_argument("--raw", help="folder for gpu-*.json")
    args = p.parse_args()
    folder, tmp = args.results, None
    if not os.path.exists(os.path.join(folder, "grid.tsv")) and not os.path.isfile(folder):
        sys.exit(f"report: {folder} is neither run.sh's output folder (no grid.tsv) nor its archive")
    if os.path.isfile(folder):
        tmp = tempfile.mkdtemp()
        with tarfile.open(folder) as t:
            t.extractall(tmp, filter="data")
        subs = [d for d in os.listdir(tmp) if os.path.isdir(os.path.join(tmp, d))]
        folder = os.path.join(tmp, subs[0]) if len(subs) == 1 else tmp
    rows = rows_of(folder)
    text = section(folder, rows)
    if args.raw:
        os.makedirs(args.raw, exist_ok=True)
        for r in rows:
            for side in ("go", "python"):
                src = os.path.join(folder, f"{side}-{r['config']}.json")
                if os.path.exists(src):
                    shutil.copyfile(src, os.path.join(args.raw, f"gpu-{r['config']}-{side}.json"))
        for extra in ("go-nccl.json", "parity-gpu.json", "parity-cpu.json"):
            if os.path.exists(os.path.join(folder, extra)):
                shutil.copyfile(os.path.join(folder, extra), os.path.join(args.raw, "gpu-" + extra.removeprefix("go-")))
        with open(os.path.join(args.raw, "gpu-summary.json"), "w") as f:
            json.dump({"schema": "fwbench.gpu-summary/v1", "machine": read(folder, "machine.txt").splitlines(),
                       "rows": rows}, f, indent=2)
    if args.doc:
        with open(args.doc) as f:
            doc = f.read()
        i, j = doc.find(BEGIN), doc.find(END)
        if i < 0 or j < i:
            sys.exit(f"report: {args.doc} has no {BEGIN} ... {END} section")
        with open(args.doc, "w") as f:
            f.write(doc[:i] + text + doc[j + len(END):])
    else:
        print(text)
    if tmp:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
