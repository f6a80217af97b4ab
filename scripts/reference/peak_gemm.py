#!/usr/bin/env python3
"""Peak FP32 GEMM throughput of this machine, measured with each framework's own matmul:
the denominator of the benchmark's MFU (model FLOP utilisation).

    python scripts/reference/peak_gemm.py --threads 2 --json peak.json

For N in --sizes, C = A·B with A, B float32 N×N costs 2·N³ floating-point operations. Each
framework multiplies --repeat times after --warmup untimed products, with the same
intra-/inter-op thread counts as the training runs; the best (shortest) time of any
repeat gives that framework's peak, and the machine's peak is the larger of the two. TF's
product runs in a tf.function that returns only a scalar (reduce_sum of C, 2·N² extra
operations, not counted), so no N×N copy to numpy is timed.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def torch_peak(args):
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    out = {"framework": "torch", "version": torch.__version__.split("+")[0], "threads": torch.get_num_threads(), "sizes": {}}
    for n in args.sizes:
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        c = torch.empty(n, n)
        for _ in range(args.warmup):
            torch.mm(a, b, out=c)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            times.append(time.perf_counter() - t0)
        out["sizes"][str(n)] = {"best_seconds": min(times), "median_seconds": sorted(times)[len(times) // 2],
                                "gflops_best": 2 * n**3 / min(times) / 1e9}
    return out


def tf_peak(args):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    out = {"framework": "tensorflow", "version": tf.__version__, "threads": args.threads,
           "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: on)"), "sizes": {}}

    @tf.function(jit_compile=False)
    def mm(a, b):
        return tf.reduce_sum(tf.linalg.matmul(a, b))

    for n in args.sizes:
        g = tf.random.Generator.from_seed(0)
        a, b = g.normal((n, n)), g.normal((n, n))
        for _ in range(args.warmup):
            mm(a, b).numpy()
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            mm(a, b).numpy()
            times.append(time.perf_counter() - t0)
        out["sizes"][str(n)] = {"best_seconds": min(times), "median_seconds": sorted(times)[len(times) // 2],
                                "gflops_best": 2 * n**3 / min(times) / 1e9}
    return out


def main():
    p = argparse.ArgumentParser(description="peak FP32 GEMM FLOP/s with torch.mm and tf.linalg.matmul")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json")
    p.add_argument("--only", choices=["torch", "tensorflow"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:  # one framework per process: neither library's threads disturb the other
        res = torch_peak(args) if args.only == "torch" else tf_peak(args)
        print(json.dumps(res))
        return
    base = [sys.executable, os.path.abspath(__file__), "--threads", str(args.threads), "--repeat", str(args.repeat),
            "--warmup", str(args.warmup), "--sizes", *map(str, args.sizes)]
    results = []
    for fw in ("torch", "tensorflow"):
        r = subprocess.run(base + ["--only", fw], check=True, capture_output=True, text=True)
        results.append(json.loads(r.stdout.strip().splitlines()[-1]))
    peak = max(s["gflops_best"] for r in results for s in r["sizes"].values())
    doc = {"schema": "fwbench.peak-gemm/v1", "cpu": benchlib.cpu_model(), "cores": os.cpu_count(),
           "flops_per_gemm": "2·N³", "peak_gflops": peak, "results": results}
    for r in results:
        for n, s in r["sizes"].items():
            print(f"{r['framework']:10s} N={n}: {s['gflops_best']:.1f} GFLOP/s (best of {args.repeat})", file=sys.stderr)
    if args.json:
        benchlib.write_json(args.json, doc)


if __name__ == "__main__":
    main()
