#!/usr/bin/env python3
"""Time the PyTorch reference implementation of CoLT5 (lucidrains/CoLT5-attention)
on this CPU, so the libcolt5 C benchmarks can print ratios against it in the same run.

What it times (median and min wall time over --reps runs, after --warmup untimed runs):
  cd     colt5_attention.coor_descent (plain PyTorch) on one row, or with
         --shapes ROWSxN on rows x n; with --device cuda the reference's Triton
         kernel (triton_coor_descent) on the GPU, plain PyTorch where that kernel
         refuses the row (n > 131072), said in the line (impl=torch);
         s = randn(rows, n) * 2 with n_iters=20, k=n/16*9/8, eps=0.03, eps_init=4.0,
         eps_decay=0.7; forward alone (no_grad) and forward+backward of (y*g).sum().
         GPU times are CUDA-event medians (triton.testing.do_bench, TF32 on).
  block  ConditionalRoutedTransformerBlock(dim=256, 4 light + 4 heavy heads of 64,
         window 128, ff mults 0.5/4, n//16 heavy ff/q/kv tokens) on x = randn(batch, n, 256);
         forward (no_grad) and forward+backward of (out*g).sum(); also tokens/s.

Run it with a Python that has torch (on Debian: /usr/bin/python3), e.g.
  /usr/bin/python3 bench/reference_bench.py --ref /work/ref --threads 2 cd --n 8192 131072
  /usr/bin/python3 bench/reference_bench.py --ref /work/ref --threads 2 --reps 5 block --n 4096
--ref DIR (or env C5_REFERENCE) is a directory holding checkouts of colt5_attention,
local_attention, hyper_connections and einops (as immediate subdirectories, or directly).
The reference code is never committed to or copied into this repository.

Output: one line per measurement on stdout, whitespace-separated key=value, e.g.
  ref op=cd pass=fwd n=8192 threads=2 dtype=float32 median_ms=1.234 min_ms=1.100 reps=7
Everything else (warnings, errors) goes to stderr.
"""
import argparse
import os
import statistics
import sys
import time

PACKAGES = ("colt5_attention", "local_attention", "hyper_connections", "einops")


def add_common(p, suppress):
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p.add_argument("--ref", default=d(os.environ.get("C5_REFERENCE")),
                   help="directory with the reference checkouts (env C5_REFERENCE)")
    p.add_argument("--threads", type=int, default=d(None), help="torch.set_num_threads")
    p.add_argument("--dtype", choices=("float32", "float64"), default=d("float32"))
    p.add_argument("--reps", type=int, default=d(7), help="timed repetitions (>= 5)")
    p.add_argument("--warmup", type=int, default=d(2), help="untimed repetitions")
    p.add_argument("--device", choices=("cpu", "cuda"), default=d("cpu"))


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common(ap, False)
    sub = ap.add_subparsers(dest="op", required=True)
    cd = sub.add_parser("cd", help="coordinate descent router")
    block = sub.add_parser("block", help="ConditionalRoutedTransformerBlock")
    for p in (cd, block):
        add_common(p, True)
        p.add_argument("--n", type=int, nargs="+", required=(p is block))
    cd.add_argument("--shapes", nargs="+", default=[], help="ROWSxN, e.g. 16x8192 (cd only)")
    block.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    if not a.ref:
        ap.error("--ref DIR (or env C5_REFERENCE) is required")
    if a.reps < 5:
        ap.error("--reps must be at least 5")
    return a


def import_reference(ref):
    ref = os.path.abspath(ref)
    if not os.path.isdir(ref):
        print(f"error: reference directory {ref} does not exist", file=sys.stderr)
        sys.exit(2)
    paths = [ref] + [os.path.join(ref, s) for s in sorted(os.listdir(ref))
                     if any(os.path.isdir(os.path.join(ref, s, p)) for p in PACKAGES)]
    sys.path[:0] = paths
    try:
        import torch  # noqa: F401
    except ImportError:
        print("error: torch is not importable by this Python; try /usr/bin/python3",
              file=sys.stderr)
        sys.exit(2)
    try:
        for p in PACKAGES:
            __import__(p)
    except ImportError as e:
        print(f"error: cannot import the CoLT5 reference from {ref}: missing package "
              f"'{e.name or p}' while importing {p} ({e})", file=sys.stderr)
        sys.exit(2)


def bench(fn, warmup, reps):
    """Run fn warmup times untimed, then reps times timed; return times in ms."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return ts


def bench_cuda(fn, warmup, reps):
    """CUDA-event times in ms of reps runs after warmup runs (each event pair around one run)."""
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1))
    return ts


def report(a, op, pas, n, ts, tokens=None, extra=""):
    import torch
    med = statistics.median(ts)
    line = (f"ref op={op} pass={pas} n={n} threads={torch.get_num_threads()} device={a.device} "
            f"dtype={a.dtype} median_ms={med:.4f} min_ms={min(ts):.4f} reps={len(ts)}{extra}")
    if tokens is not None:
        line += f" tokens_per_s={tokens / (med / 1e3):.1f}"
    print(line, flush=True)


def run_cd(a):
    import torch
    from colt5_attention.coor_descent import coor_descent
    shapes = [(1, n) for n in (a.n or [])] + [tuple(int(x) for x in sh.split("x")) for sh in a.shapes]
    cuda = a.device == "cuda"
    timer = bench_cuda if cuda else bench
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        from colt5_attention.triton_coor_descent import triton_coor_descent
    for rows, n in shapes:
        torch.manual_seed(0)
        dev = "cuda" if cuda else "cpu"
        s0 = torch.randn(rows, n, device=dev) * 2
        g = torch.randn(rows, n, device=dev)
        kw = dict(n_iters=20, k=n / 16 * 9 / 8, eps=0.03, eps_init=4.0, eps_decay=0.7)
        impl, f = "torch", coor_descent
        if cuda and n <= 131072:   # the reference's Triton kernel refuses longer rows
            impl, f = "triton", triton_coor_descent

        def fwd():
            with torch.no_grad():
                f(s0, **kw)

        def fwdbwd():
            s = s0.detach().requires_grad_()
            (f(s, **kw) * g).sum().backward()

        extra = f" rows={rows} impl={impl}"
        report(a, "cd", "fwd", n, timer(fwd, a.warmup, a.reps), extra=extra)
        report(a, "cd", "fwdbwd", n, timer(fwdbwd, a.warmup, a.reps), extra=extra)


def run_block(a):
    import torch
    from colt5_attention import ConditionalRoutedTransformerBlock
    for n in a.n:
        torch.manual_seed(0)
        m = ConditionalRoutedTransformerBlock(
            dim=256, light_dim_head=64, light_heads=4, light_window_size=128,
            heavy_dim_head=64, heavy_heads=4, light_ff_mult=0.5, heavy_ff_mult=4,
            num_heavy_ff_tokens=n // 16, num_heavy_attn_tokens_q=n // 16,
            num_heavy_attn_tokens_kv=n // 16)
        x = torch.randn(a.batch, n, 256)
        g = torch.randn(a.batch, n, 256)

        def fwd():
            with torch.no_grad():
                m(x)

        def fwdbwd():
            m.zero_grad(set_to_none=True)
            (m(x) * g).sum().backward()

        tok = a.batch * n
        report(a, "block", "fwd", n, bench(fwd, a.warmup, a.reps), tok)
        report(a, "block", "fwdbwd", n, bench(fwdbwd, a.warmup, a.reps), tok)


def main():
    a = parse_args()
    import_reference(a.ref)
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.set_default_dtype(getattr(torch, a.dtype))
    (run_cd if a.op == "cd" else run_block)(a)


if __name__ == "__main__":
    main()
