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
         window 128, ff mults 0.5/4, n//16 heavy ff/q/kv tokens) on x = randn(batch, n, dim);
         forward (no_grad) and forward+backward of (out*g).sum(); also tokens/s.
         --dim/--heads/--dim-head/--window change the setting (c5-cuda-bench block's:
         --dim 512 --heads 8 --dim-head 64 --window 128); --shapes BxN ... gives batch and n
         together. With --device cuda: the model and data on the GPU; --use-triton and
         --use-flash-attn are the block's use_triton / use_flash_attn (the Triton router
         refuses n > 131072: those shapes run the plain PyTorch router, said in the line,
         router=torch); --tf32 allows TF32 in matmuls and cuDNN (off otherwise);
         --autocast bf16 runs the forward (and loss) under torch.autocast(bfloat16);
         --router-fp32 hands the routers' coordinate descent fp32 scores (their
         router.coor_descent wrapped in this script: the reference's files are untouched),
         since the Triton router fails on the bf16 scores autocast gives it.
         Times: the median over --reps batches of the mean of a batch of calls between two
         torch.cuda.synchronize() (the method of c5-cuda-bench); peak memory
         torch.cuda.max_memory_allocated/reserved, reset for each shape. A shape that fails
         (out of memory, a refused kernel) is reported on stdout (error=...) and the next runs.

Run it with a Python that has torch (on Debian: /usr/bin/python3), e.g.
  /usr/bin/python3 bench/reference_bench.py --ref /work/ref --threads 2 cd --n 8192 131072
  /usr/bin/python3 bench/reference_bench.py --ref /work/ref --threads 2 --reps 5 block --n 4096
  python3 reference_bench.py --ref ref --device cuda --reps 7 block --dim 512 --heads 8 --dim-head 64 \
      --window 128 --use-triton --use-flash-attn --tf32 --shapes 4x8192 1x32768 1x131072 1x1048576
--ref DIR (or env C5_REFERENCE) is a directory holding checkouts of colt5_attention,
local_attention, hyper_connections and einops (as immediate subdirectories, or directly).
The reference code is never committed to or copied into this repository.

Output: one line per measurement on stdout, whitespace-separated key=value, e.g.
  ref op=cd pass=fwd n=8192 threads=2 dtype=float32 median_ms=1.234 min_ms=1.100 reps=7
Everything else (warnings, errors) goes to stderr.
"""
import argparse
import contextlib
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
        p.add_argument("--n", type=int, nargs="+", default=[])
    cd.add_argument("--shapes", nargs="+", default=[], help="ROWSxN, e.g. 16x8192")
    block.add_argument("--shapes", nargs="+", default=[], help="BxN (batch x tokens), e.g. 4x8192")
    block.add_argument("--batch", type=int, default=1, help="batch of the --n lengths")
    block.add_argument("--dim", type=int, default=256)
    block.add_argument("--heads", type=int, default=4, help="light and heavy heads each")
    block.add_argument("--dim-head", type=int, default=64, help="light and heavy head width")
    block.add_argument("--window", type=int, default=128, help="light_window_size")
    block.add_argument("--use-triton", action="store_true", help="the block's use_triton (Triton router)")
    block.add_argument("--use-flash-attn", action="store_true", help="the block's use_flash_attn (torch >= 2)")
    block.add_argument("--tf32", action="store_true", help="TF32 in CUDA matmuls and cuDNN")
    block.add_argument("--autocast", choices=("none", "bf16"), default="none",
                       help="forward under torch.autocast (cuda, bfloat16)")
    block.add_argument("--router-fp32", action="store_true",
                       help="feed the routers' coordinate descent fp32 scores (under --autocast bf16)")
    a = ap.parse_args()
    if a.op == "block" and not (a.n or a.shapes):
        ap.error("block: give --n N ... or --shapes BxN ...")
    if a.op == "block" and a.device != "cuda" and (a.tf32 or a.autocast != "none" or a.use_triton):
        ap.error("block: --tf32, --autocast and --use-triton need --device cuda")
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


def bench_batched_cuda(fn, warmup, batches, target_s=0.1, max_batch=10):
    """Per-call mean of each of `batches` batches of calls between two synchronizations, in ms, after warmup
    calls (at least one; the later ones size the batch to about target_s seconds)."""
    import torch
    warmup = max(warmup, 1)
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(warmup - 1):
        fn()
    torch.cuda.synchronize()
    per = (time.perf_counter() - t0) / (warmup - 1) if warmup > 1 else None
    k = max(1, min(max_batch, int(target_s / per))) if per else 1
    ts = []
    for _ in range(batches):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) / k * 1e3)
    return ts


def run_block(a):
    import torch
    from colt5_attention import ConditionalRoutedTransformerBlock
    from colt5_attention.transformer_block import CoordinateDescentRouter
    cuda = a.device == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = a.tf32
        torch.backends.cudnn.allow_tf32 = a.tf32
    shapes = [(a.batch, n) for n in a.n] + [tuple(int(v) for v in sh.split("x")) for sh in a.shapes]
    failed = 0
    for batch, n in shapes:
        # the reference's Triton router refuses rows longer than 131072 (triton_coor_descent's BLOCK_SIZE)
        triton = a.use_triton and n <= 131072
        extra = (f" batch={batch} dim={a.dim} heads={a.heads} dim_head={a.dim_head} window={a.window}"
                 f" tf32={int(a.tf32)} autocast={a.autocast} router={'triton' if triton else 'torch'}"
                 f"{'_fp32scores' if a.router_fp32 else ''} flash={int(a.use_flash_attn)}")
        m = x = g = None
        try:
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            torch.manual_seed(0)
            m = ConditionalRoutedTransformerBlock(
                dim=a.dim, light_dim_head=a.dim_head, light_heads=a.heads, light_window_size=a.window,
                heavy_dim_head=a.dim_head, heavy_heads=a.heads, light_ff_mult=0.5, heavy_ff_mult=4,
                num_heavy_ff_tokens=n // 16, num_heavy_attn_tokens_q=n // 16,
                num_heavy_attn_tokens_kv=n // 16, use_triton=triton, use_flash_attn=a.use_flash_attn)
            if a.router_fp32:   # fp32 scores into the coordinate descent, whatever autocast made of them
                for r in m.modules():
                    if isinstance(r, CoordinateDescentRouter):
                        r.coor_descent = (lambda f: lambda s, *p, **kw: f(s.float(), *p, **kw))(r.coor_descent)
            dev = "cuda" if cuda else "cpu"
            m = m.to(dev)
            x = torch.randn(batch, n, a.dim, device=dev)
            g = torch.randn(batch, n, a.dim, device=dev)
            def ac():   # a fresh context each call
                return (torch.autocast("cuda", dtype=torch.bfloat16) if a.autocast == "bf16"
                        else contextlib.nullcontext())

            def fwd():
                with torch.no_grad(), ac():
                    m(x)

            def fwdbwd():
                m.zero_grad(set_to_none=True)
                with ac():
                    loss = (m(x).float() * g).sum()
                loss.backward()

            tok = batch * n
            if cuda:
                ts_f = bench_batched_cuda(fwd, a.warmup, a.reps)
                peak_f = torch.cuda.max_memory_allocated()
                ts_fb = bench_batched_cuda(fwdbwd, a.warmup, a.reps)
                mem = (f" peak_alloc_fwd_GiB={peak_f / 2**30:.3f}"
                       f" peak_alloc_GiB={torch.cuda.max_memory_allocated() / 2**30:.3f}"
                       f" peak_reserved_GiB={torch.cuda.max_memory_reserved() / 2**30:.3f}")
                report(a, "block", "fwd", n, ts_f, tok, extra + mem)
                report(a, "block", "fwdbwd", n, ts_fb, tok, extra + mem)
            else:
                report(a, "block", "fwd", n, bench(fwd, a.warmup, a.reps), tok, extra)
                report(a, "block", "fwdbwd", n, bench(fwdbwd, a.warmup, a.reps), tok, extra)
        except Exception as e:   # noqa: BLE001 -- one shape's failure is a result; the next shape runs
            oom = "out of memory" in str(e).lower()
            msg = " ".join(f"{type(e).__name__}: {e}".split())[:400]
            peak = f" peak_alloc_GiB={torch.cuda.max_memory_allocated() / 2**30:.3f}" if cuda else ""
            print(f"ref op=block n={n} device={a.device}{extra}{peak} "
                  f"error={'out_of_memory' if oom else 'failed'}: {msg}", flush=True)
            failed += 1
        finally:
            m = x = g = None   # the next shape starts from an empty cache
            if cuda:
                torch.cuda.empty_cache()
    if failed:
        print(f"error: {failed} of {len(shapes)} block shapes failed (their lines say why)", file=sys.stderr)
    return 1 if failed else 0


def main():
    a = parse_args()
    import_reference(a.ref)
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.set_default_dtype(getattr(torch, a.dtype))
    sys.exit(run_cd(a) if a.op == "cd" else run_block(a))


if __name__ == "__main__":
    main()
