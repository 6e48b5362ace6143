#!/usr/bin/env python3
"""train_reference.py - tokens/s of a PyTorch training step of the masked-byte
model (tools/colt5_torch.py: the reference's ConditionalRoutedTransformerBlock
layers) at the shape of a colt5-train configuration, for BENCHMARKS.md beside
colt5-train's own tokens/s measured in the same run (bench/train_compare.sh).

    PYTHONPATH=REFERENCE_DIR:tools python3 bench/train_reference.py CONFIG.json \
        [--steps 20] [--warmup 3] [--threads 2] [--dtype float64|float32]

CONFIG.json: the "model" and "train" objects of colt5-train's configuration
(its log's first line, or a --config file); train.batch sequences of
model.max_seq_len bytes per step. One step: forward, the masked-byte loss
(15% of positions scored), backward, clip_grad_norm_, AdamW. Batches are
random bytes: the cost of a step does not depend on the text.
Prints one line: "reference: B x N, DTYPE, T threads: S ms/step, R tokens/s".
"""
import argparse
import json
import sys
import time

import torch

from colt5_torch import CoLT5ByteModel, param_groups


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('config')
    ap.add_argument('--steps', type=int, default=20)
    ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--dtype', choices=('float64', 'float32'), default='float64')
    a = ap.parse_args()
    with open(a.config) as f:
        text = f.read()
    if text.startswith('#'):   # a colt5-train log: "# colt5-train {config}" first
        line = text.splitlines()[0]
        text = line[line.index('{'):]
    cfg = json.loads(text)
    model_cfg = dict(cfg['model'])
    train = cfg.get('train', {})
    batch = int(train.get('batch', 8))
    n = int(model_cfg['max_seq_len'])
    model_cfg.pop('random_route', None)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, a.dtype)
    model = CoLT5ByteModel(**model_cfg).to(dtype)
    opt = torch.optim.AdamW(param_groups(model, float(train.get('weight_decay', 0.01))),
                            lr=float(train.get('lr', 1e-3)))
    clip = float(train.get('clip', 1.0))

    def step():
        tokens = torch.randint(0, 256, (batch, n))
        scored = torch.rand(batch, n) < 0.15
        targets = torch.where(scored, tokens, torch.full_like(tokens, -1))
        tokens = torch.where(scored, torch.full_like(tokens, 256), tokens)
        opt.zero_grad(set_to_none=True)
        loss_sum, count, _ = model(tokens, targets)
        (loss_sum / count).backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = (time.perf_counter() - t0) / a.steps
    print(f'reference: {batch} x {n}, {a.dtype}, {a.threads} threads: {dt * 1e3:.1f} ms/step, '
          f'{batch * n / dt:.0f} tokens/s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
