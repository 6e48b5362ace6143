"""colt5_torch.py - the masked-byte model of libcolt5 in PyTorch, built from the
reference's modules (lucidrains CoLT5-attention: ConditionalRoutedTransformerBlock,
RMSNorm), so that a libcolt5 checkpoint and this module's state_dict hold the same
names and shapes (docs/model.md), plus the optimizer rules of lib/colt5.h
(c5_adamw_config): which parameters decay, and the learning-rate schedule.

    model = CoLT5ByteModel(**config["model"])
    loss_sum, count, logits = model(tokens, targets, mask)
    opt = torch.optim.AdamW(param_groups(model, wd), lr=lr, betas=..., eps=...)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(config["train"]))

The reference must be importable (PYTHONPATH holding colt5_attention,
local_attention, einops, ...). It is never copied into this repository.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from colt5_attention import ConditionalRoutedTransformerBlock
from colt5_attention.transformer_block import RMSNorm

MASK_TOKEN = 256   # C5_MASK_TOKEN: bytes are 0..255
NUM_BYTES = 256

# names of rank-2 ".weight" parameters that never decay (embedding tables, not Linear matrices)
NO_DECAY = ('token_emb.weight', 'pos_emb.weight')


class CoLT5ByteModel(nn.Module):
    """token_emb [257, dim] + pos_emb [max_seq_len, dim] (global positions), depth
    ConditionalRoutedTransformerBlocks (every keyword argument but dim, depth and
    max_seq_len goes to each of them), RMSNorm 'norm', to_logits Linear(dim, 256).
    An encoder: CoLT5's routing picks its top-k tokens over the whole sequence,
    so there is no causal mode (docs/model.md).
    light_rotary_emb=True (libcolt5's option; the reference has none): each
    layer's conditional_attn.light_attn is rebuilt as LocalMHA with
    use_rotary_pos_emb=True, the same arguments and parameter names otherwise.
    pos_emb_zero_init=True (libcolt5's option): pos_emb starts at zeros."""

    def __init__(self, dim, depth, max_seq_len, light_rotary_emb=False, pos_emb_zero_init=False, **block_kwargs):
        super().__init__()
        self.max_seq_len = max_seq_len
        self.token_emb = nn.Embedding(MASK_TOKEN + 1, dim)
        self.pos_emb = nn.Embedding(max_seq_len, dim)
        if pos_emb_zero_init:
            nn.init.zeros_(self.pos_emb.weight)
        self.layers = nn.ModuleList([ConditionalRoutedTransformerBlock(dim, **block_kwargs) for _ in range(depth)])
        if light_rotary_emb:
            from local_attention import LocalMHA
            for layer in self.layers:
                attn = layer.conditional_attn
                if attn.light_attn is None:
                    continue
                old = attn.light_attn
                attn.light_attn = LocalMHA(dim=dim, dim_head=block_kwargs.get('light_dim_head', 64),
                                           heads=block_kwargs.get('light_heads', 8),
                                           window_size=block_kwargs.get('light_window_size', 128) // 2,
                                           prenorm=True, causal=False, use_rotary_pos_emb=True,
                                           look_backward=1, look_forward=1)
                attn.light_attn.load_state_dict(old.state_dict(), strict=False)   # its own inv_freq buffer
        self.norm = RMSNorm(dim)
        self.to_logits = nn.Linear(dim, NUM_BYTES)

    def forward(self, tokens, targets, mask=None):
        """tokens [b, n] (0..256), targets [b, n] (0..255, or -1: not scored),
        mask [b, n] bool (True = keep) or None. Returns (loss_sum, count, logits):
        the cross-entropy summed over the scored positions, their number, and
        the logits [b, n, 256]. The mean loss is loss_sum / count."""
        n = tokens.shape[1]
        if n > self.max_seq_len:
            raise ValueError(f'sequence of {n} tokens, max_seq_len {self.max_seq_len}')
        if tokens.min() < 0 or tokens.max() > MASK_TOKEN:
            raise ValueError(f'tokens must lie in 0..{MASK_TOKEN}')
        pos = torch.arange(n, device=tokens.device)
        x = self.token_emb(tokens) + self.pos_emb(pos)
        for layer in self.layers:
            x = layer(x, mask=mask)
        logits = self.to_logits(self.norm(x))
        scored = targets >= 0
        loss_sum = F.cross_entropy(logits[scored], targets[scored], reduction='sum')
        return loss_sum, scored.sum(), logits


def param_groups(model, weight_decay, decay_all=False):
    """AdamW parameter groups by c5_adamw_config's rule: weight decay for the
    parameters named '*.weight' of rank 2 other than token_emb.weight and
    pos_emb.weight (the Linear matrices), or for every parameter with decay_all;
    the others get none."""
    decay, other = [], []
    for name, p in model.named_parameters():
        if decay_all or (name.endswith('.weight') and p.ndim == 2 and name not in NO_DECAY):
            decay.append(p)
        else:
            other.append(p)
    return [{'params': decay, 'weight_decay': weight_decay}, {'params': other, 'weight_decay': 0.0}]


def schedule_lr(cfg, t):
    """The learning rate of optimizer step t = 1, 2, ... (c5_adamw_lr): linear
    warmup over warmup_steps, then cosine from lr down to lr_min at total_steps."""
    lr, lr_min = cfg['lr'], cfg.get('lr_min', 0.0)
    warmup, total = cfg.get('warmup_steps', 0), cfg.get('total_steps', 1)
    if t <= warmup:
        return lr * t / warmup
    p = min(1.0, (t - warmup) / max(1, total - warmup))
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * p)) / 2


def lr_lambda(cfg):
    """For torch.optim.lr_scheduler.LambdaLR over an optimizer whose base lr is
    cfg['lr']: LambdaLR's epoch e sets the lr of optimizer step t = e + 1 (the
    scheduler's constructor takes epoch 0 for the first step; scheduler.step()
    after each optimizer.step())."""
    return lambda e: schedule_lr(cfg, e + 1) / cfg['lr']
