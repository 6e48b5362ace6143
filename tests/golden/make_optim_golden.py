"""Golden data for the C library's AdamW (lib/optim.c), from PyTorch itself:
torch.optim.AdamW with two parameter groups (decay / no decay), clipping by
torch.nn.utils.clip_grad_norm_ and the warm-up + cosine schedule through
LambdaLR, in float64 on the CPU. Needs torch and h5py only (no reference
model code). Run: /usr/bin/python3 tests/golden/make_optim_golden.py [OUT.h5]

  /             attrs: case, torch (version), params (the parameter names,
                comma-separated, in table order), steps
  /config/<option>          [1] float64: lr, lr_min, warmup_steps,
                total_steps, beta1, beta2, eps, weight_decay, clip_norm
  /init/<name>              the values before the first step
  /step_<s>/grads/<name>    the gradient given to step s (before clipping)
  /step_<s>/params/<name>   the values after step s
  /step_<s>/exp_avg/<name>, /step_<s>/exp_avg_sq/<name>   the moments after step s
  /step_<s>/lr [1], /step_<s>/grad_norm [1]   the lr used, the norm before clipping
"""
import math, os, sys
import torch, h5py, numpy as np

torch.set_default_dtype(torch.float64)

CFG = dict(lr=1e-2, lr_min=1e-3, warmup_steps=2, total_steps=5, beta1=0.9, beta2=0.99, eps=1e-8,
           weight_decay=0.1, clip_norm=1.0)
# Names and shapes chosen to exercise the decay rule: a.weight is a Linear
# matrix (decay); the embeddings, a bias, an RMSNorm gain, a rank-1 ".weight"
# and a rank-3 ".weight" are not.
PARAMS = [("a.weight", (6, 5)), ("b.bias", (5,)), ("token_emb.weight", (7, 4)), ("pos_emb.weight", (5, 4)),
          ("norm.gamma", (4,)), ("ln.weight", (5,)), ("c.weight", (3, 2, 2)), ("layers.0.to_q.weight", (4, 3))]
# The gradients' scale per step: the first and third are clipped (norm > 1), the second is not.
GRAD_SCALE = [1.0, 0.05, 0.4]


def lr_at(t):
    c = CFG
    if c["warmup_steps"] > 0 and t <= c["warmup_steps"]:
        return c["lr"] * t / c["warmup_steps"]
    p = min(1.0, (t - c["warmup_steps"]) / max(1, c["total_steps"] - c["warmup_steps"]))
    return c["lr_min"] + (c["lr"] - c["lr_min"]) * (1 + math.cos(math.pi * p)) / 2


def decays(name, shape):
    return name.endswith(".weight") and len(shape) == 2 and name not in ("token_emb.weight", "pos_emb.weight")


def main(out):
    g = torch.Generator().manual_seed(1234)
    params = [torch.nn.Parameter(torch.randn(*shape, generator=g)) for _, shape in PARAMS]
    decay = [p for (n, s), p in zip(PARAMS, params) if decays(n, s)]
    no_decay = [p for (n, s), p in zip(PARAMS, params) if not decays(n, s)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": CFG["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=CFG["lr"], betas=(CFG["beta1"], CFG["beta2"]), eps=CFG["eps"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_at(e + 1) / CFG["lr"])
    tmp = out + ".tmp.%d" % os.getpid()
    with h5py.File(tmp, "w") as f:
        f.attrs["case"] = "optim_adamw"
        f.attrs["torch"] = str(torch.__version__)
        f.attrs["params"] = ",".join(n for n, _ in PARAMS)
        f.attrs["steps"] = len(GRAD_SCALE)
        for k, v in CFG.items():
            f["config/" + k] = np.array([float(v)])
        for (n, _), p in zip(PARAMS, params):
            f["init/" + n] = p.detach().numpy()
        for s, scale in enumerate(GRAD_SCALE, 1):
            opt.zero_grad()
            for (n, shape), p in zip(PARAMS, params):
                p.grad = scale * torch.randn(*shape, generator=g)
                f["step_%d/grads/%s" % (s, n)] = p.grad.numpy()
            lr = opt.param_groups[0]["lr"]
            norm = torch.nn.utils.clip_grad_norm_(params, CFG["clip_norm"])
            opt.step()
            sched.step()
            f["step_%d/lr" % s] = np.array([lr])
            f["step_%d/grad_norm" % s] = np.array([float(norm)])
            for (n, _), p in zip(PARAMS, params):
                st = opt.state[p]
                f["step_%d/params/%s" % (s, n)] = p.detach().numpy()
                f["step_%d/exp_avg/%s" % (s, n)] = st["exp_avg"].numpy()
                f["step_%d/exp_avg_sq/%s" % (s, n)] = st["exp_avg_sq"].numpy()
            print("step %d: lr %.17g, grad norm %.17g" % (s, lr, float(norm)))
    os.replace(tmp, out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                            "optim_adamw.h5"))
