"""Golden vector of the masked-byte model (lib/model.c, tools/colt5_torch.py):
one forward and backward of CoLT5ByteModel in float64 on the CPU, then one
clipped AdamW step with the param groups and the LambdaLR schedule of
tools/colt5_torch.py. Routers with straight_through off (router_kwargs eps 3.0,
as set libcolt5's *_no_straight_through cases: most selected scores below 1), so
the router gradients are exercised. make_golden.py's tie-break rule for the
routers' top-k is installed by importing it.

    PYTHONPATH=<reference packages>:tools python3 tests/golden/make_model_golden.py tests/golden

writes model_basic.h5:

  /            attrs: case, module = CoLT5ByteModel, ctor (JSON of the model's
               keyword arguments: dim, depth, max_seq_len and the blocks'),
               config (JSON {"model": ctor, "train": the AdamW options}),
               forward ("{}"), dtype, loss
  /inputs      tokens [b, n] int64 (0..256), targets [b, n] int64 (-1: not
               scored), mask [b, n] uint8 (1 = keep)
  /params      every state_dict entry
  /outputs     loss_sum [1], count [1] int64, logits [b, n, 256]
  /grads       every parameter: d(loss_sum / count) / d param
  /routers     layers.<i>.conditional_attn.q_router, ... (make_golden.py's layout)
  /adamw       after clip_grad_norm_(clip_norm) and one AdamW step (t = 1):
               grad_norm [1] (before clipping), lr [1] (of the step), also as
               attributes, with step = 1;
               params/<name> (updated), exp_avg/<name>, exp_avg_sq/<name>
"""
import argparse, json, os, sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden as mg   # float64 default, the routers' tie-break rule and recording
from colt5_torch import CoLT5ByteModel, param_groups, lr_lambda


def model_basic(path, case='model_basic', **over):
    torch.manual_seed(51)
    g = torch.Generator().manual_seed(52)
    ctor = dict(dim=16, depth=2, max_seq_len=40, num_heavy_attn_tokens_q=6, num_heavy_attn_tokens_kv=8,
                num_heavy_ff_tokens=8, light_dim_head=8, light_heads=2, light_window_size=8, heavy_dim_head=8,
                heavy_heads=2, light_ff_mult=0.5, heavy_ff_mult=2, router_straight_through=False,
                router_kwargs=dict(eps=3.0), **over)
    # clip_norm well below the gradient norm (about 0.9 here), so the clipping acts; warmup 2 of 10: step 1 at lr / 2
    train = dict(lr=1e-2, lr_min=1e-3, warmup_steps=2, total_steps=10, beta1=0.9, beta2=0.95, eps=1e-8,
                 weight_decay=0.1, clip_norm=0.25, decay_all=False)
    model = CoLT5ByteModel(**ctor)
    mg.perturb_norms(model, g)
    b, n = 2, 32
    byte = torch.randint(0, 256, (b, n), generator=g)
    hidden = torch.rand(b, n, generator=g) < 0.3            # the positions whose byte is masked
    tokens = torch.where(hidden, torch.full_like(byte, 256), byte)
    targets = torch.where(hidden | (torch.rand(b, n, generator=g) < 0.1), byte, torch.full_like(byte, -1))
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, n - 5:] = False                                   # batch row 1 padded at its end: nothing scored there
    targets[~mask] = -1
    mg.RECORD.clear()
    loss_sum, count, logits = model(tokens, targets, mask)
    routers = [(mg.router_names(model)[id(m)], ret) for m, ret in mg.RECORD]
    (loss_sum / count).backward()
    named = list(model.named_parameters())
    with h5py.File(path + '.tmp', 'w') as f:
        f.attrs['case'] = case
        f.attrs['module'] = 'CoLT5ByteModel'
        f.attrs['ctor'] = json.dumps(ctor)
        f.attrs['config'] = json.dumps(dict(model=ctor, train=train))
        f.attrs['forward'] = json.dumps({})
        f.attrs['dtype'] = 'float64'
        f.attrs['loss'] = 'loss_sum / count (the gradients); loss_sum = sum of cross-entropy over targets >= 0'
        f['inputs/tokens'] = tokens.numpy().astype(np.int64)
        f['inputs/targets'] = targets.numpy().astype(np.int64)
        f['inputs/mask'] = mask.numpy().astype(np.uint8)
        for name, p in named:
            f['params/' + name] = p.detach().numpy()
            f['grads/' + name] = (p.grad if p.grad is not None else torch.zeros_like(p)).numpy()
        f['outputs/loss_sum'] = np.array([loss_sum.item()])
        f['outputs/count'] = np.array([int(count)], dtype=np.int64)
        f['outputs/logits'] = logits.detach().numpy()
        gr = f.create_group('routers')
        for rname, ret in routers:
            r = gr.create_group(rname)
            r.attrs['routed'] = 1 if ret.indices is not None else 0
            if ret.indices is None:
                continue
            order = ret.indices.detach().argsort(dim=-1)
            r['indices'] = ret.indices.detach().gather(-1, order).numpy().astype(np.int64)
            r['scores'] = ret.scores.detach().gather(-1, order).numpy()

        # one optimizer step, as the training job takes it
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train['clip_norm'])
        assert grad_norm > 2 * train['clip_norm'], f'clip {train["clip_norm"]} does not act on norm {grad_norm}'
        opt = torch.optim.AdamW(param_groups(model, train['weight_decay'], train['decay_all']), lr=train['lr'],
                                betas=(train['beta1'], train['beta2']), eps=train['eps'])
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(train))
        lr = opt.param_groups[0]['lr']
        opt.step()
        sched.step()
        a = f.create_group('adamw')
        a.attrs['grad_norm'] = float(grad_norm)
        a.attrs['lr'] = lr
        a.attrs['step'] = 1
        a['grad_norm'] = np.array([float(grad_norm)])
        a['lr'] = np.array([lr])
        for name, p in named:
            st = opt.state[p]
            a['params/' + name] = p.detach().numpy()
            a['exp_avg/' + name] = st['exp_avg'].numpy()
            a['exp_avg_sq/' + name] = st['exp_avg_sq'].numpy()
    os.replace(path + '.tmp', path)
    print(f'{path}: loss_sum {loss_sum.item():.6f} over {int(count)}, grad norm {float(grad_norm):.4f}, lr {lr:g}, '
          f'{len(routers)} routers')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('out')
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    model_basic(os.path.join(a.out, 'model_basic.h5'))
    # libcolt5's light_rotary_emb (rotary LocalMHA in every layer), angles in float64 as libcolt5's
    with mg.float64_sinusoidal():
        model_basic(os.path.join(a.out, 'model_light_rotary.h5'), 'model_light_rotary', light_rotary_emb=True)


if __name__ == '__main__':
    main()
