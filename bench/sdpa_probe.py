#!/usr/bin/env python3
"""sdpa_probe.py - what a heavy attention with its scores on chip could cost on this GPU: torch's
scaled_dot_product_attention backends (flash, cuDNN, cuDNN and memory-efficient with a key mask) on the
block's heavy shapes (8 heads of 64, nq = n/16 routed queries over nk = n/16 + 1 slots: n = 32768,
131072, 1M), bf16, forward and forward+backward, mean of 10 after 3 warm-up calls. Then, at n = 131072,
whether four runs of each give the same bits (o, dq, dk, dv), with torch's deterministic algorithms off and on:
the library's default mode repeats bit for bit, so a backend that does not cannot replace its heavy attention.
usage: python3 bench/sdpa_probe.py   (a CUDA GPU and torch >= 2.5; BENCHMARKS.md has its output on an H200)"""
import torch, time, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
print("torch", torch.__version__, "cudnn", torch.backends.cudnn.version())
def t(fn, reps=10):
    for _ in range(3): fn()
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(reps): fn()
    torch.cuda.synchronize(); return (time.perf_counter() - t0) / reps * 1e3
for nq, nk in ((2048, 2049), (8192, 8193), (65536, 65537)):
    q = torch.randn(1, 8, nq, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(1, 8, nk, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(1, 8, nk, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    m = (torch.rand(1, 1, 1, nk, device="cuda") < 0.9); m[..., 0] = True
    g = torch.randn(1, 8, nq, 64, device="cuda", dtype=torch.bfloat16)
    for name, be, mask in (("flash", SDPBackend.FLASH_ATTENTION, None), ("cudnn", SDPBackend.CUDNN_ATTENTION, None),
                           ("cudnn+mask", SDPBackend.CUDNN_ATTENTION, m), ("efficient+mask", SDPBackend.EFFICIENT_ATTENTION, m)):
        try:
            with sdpa_kernel(be):
                f = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                tf = t(f)
                def fb():
                    o = f(); o.backward(g)
                tfb = t(fb)
            print(f"sdpa {name} nq {nq} nk {nk}: fwd {tf:.3f} ms fwd+bwd {tfb:.3f} ms")
        except Exception as e:
            print(f"sdpa {name} nq {nq} nk {nk}: {type(e).__name__}: {str(e)[:150]}")

torch.manual_seed(0)
nq, nk = 8192, 8193
q = torch.randn(1, 8, nq, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
k = torch.randn(1, 8, nk, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
v = torch.randn(1, 8, nk, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
m = (torch.rand(1, 1, 1, nk, device="cuda") < 0.9); m[..., 0] = True
g = torch.randn(1, 8, nq, 64, device="cuda", dtype=torch.bfloat16)
def grads(be, mask):
    with sdpa_kernel(be):
        q.grad = k.grad = v.grad = None
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask); o.backward(g)
        return o.detach().clone(), q.grad.clone(), k.grad.clone(), v.grad.clone()
for det in (False, True):
    torch.use_deterministic_algorithms(det)
    torch.backends.cudnn.deterministic = det
    for name, be, mask in (("cudnn", SDPBackend.CUDNN_ATTENTION, None), ("cudnn+mask", SDPBackend.CUDNN_ATTENTION, m),
                           ("flash", SDPBackend.FLASH_ATTENTION, None)):
        try:
            r = [grads(be, mask) for _ in range(4)]
            same = all(torch.equal(a, b) for x in r[1:] for a, b in zip(r[0], x))
            print(f"det={det} {name} nq {nq} nk {nk}: 4 runs bit-identical (o, dq, dk, dv): {same}; "
                  f"fwd+bwd {t(lambda: grads(be, mask)):.3f} ms")
        except Exception as e:
            print(f"det={det} {name} nq {nq} nk {nk}: {type(e).__name__}: {str(e)[:150]}")
