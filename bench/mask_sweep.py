"""mask_sweep.py - one training run of the masked-byte model in PyTorch (the
wrapper tools/colt5_torch.py over the reference's modules), or of two
baselines, for choosing colt5-train's defaults (BENCHMARKS.md, "Choosing the
defaults"). Not libcolt5: the same model and objective, fast to sweep on a GPU.

    python3 bench/mask_sweep.py --ref /path/to/reference --text text.bin --name B \
        --rotary --zero --window 4 --batch 16 --steps 1280

--text: the training text (bench/fortunes_text.py writes the fortunes text as
colt5-train reads it); the last 5% is validation. Models: colt5 (default),
plain (nn.TransformerEncoder, pre-norm, full attention, learned positions),
mlp (a neural n-gram: the ctx bytes each side through an MLP). Prints the
validation bits per masked byte 8 times, then one RESULT json line.
"""
import os, sys, time, math, json
import torch, torch.nn as nn, torch.nn.functional as F
import argparse
ap=argparse.ArgumentParser()
ap.add_argument('--model',default='colt5'); ap.add_argument('--steps',type=int,default=300)
ap.add_argument('--lr',type=float,default=5e-3); ap.add_argument('--window',type=int,default=2)
ap.add_argument('--heavy',type=int,default=0); ap.add_argument('--rotary',action='store_true')
ap.add_argument('--zero',action='store_true'); ap.add_argument('--lffm',type=float,default=0.5)
ap.add_argument('--hffm',type=float,default=4); ap.add_argument('--dim',type=int,default=64)
ap.add_argument('--depth',type=int,default=2); ap.add_argument('--batch',type=int,default=8)
ap.add_argument('--seq',type=int,default=256); ap.add_argument('--mask',type=float,default=0.15)
ap.add_argument('--vmask',type=float,default=None); ap.add_argument('--warmup',type=int,default=100)
ap.add_argument('--name',default='x'); ap.add_argument('--wd',type=float,default=0.01)
ap.add_argument('--heads',type=int,default=4)
ap.add_argument('--dev',default='cuda'); ap.add_argument('--lrmin',type=float,default=1e-4)
ap.add_argument('--nval',type=int,default=8); ap.add_argument('--ctx',type=int,default=4); ap.add_argument('--hid',type=int,default=512); ap.add_argument('--eps',type=float,default=0.03)
ap.add_argument('--ref',default=None); ap.add_argument('--text',default='text.bin')
a=ap.parse_args()
if a.ref: sys.path.insert(0, a.ref)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools'))
from colt5_torch import CoLT5ByteModel, param_groups, schedule_lr
dev=torch.device(a.dev)
torch.manual_seed(0)
text=torch.tensor(list(open(a.text,'rb').read()),dtype=torch.long)
nv=int(len(text)*0.05); tr,va=text[:-nv],text[-nv:]
cnt=torch.bincount(tr,minlength=256).double(); p=cnt/cnt.sum(); H=-(p[p>0]*p[p>0].log2()).sum().item()
N=a.seq;B=a.batch
def batch(src,g,frac,bs=None):
    bs=bs or B
    st=torch.randint(0,len(src)-N,(bs,),generator=g)
    x=torch.stack([src[s:s+N] for s in st])
    m=torch.zeros(bs,N,dtype=torch.bool)
    for b in range(bs):
        while m[b].sum()<frac*N:
            L=int(torch.randint(1,6,(1,),generator=g)); s=int(torch.randint(0,N-L+1,(1,),generator=g)); m[b,s:s+L]=True
    tok=x.clone(); tok[m]=256; tgt=torch.where(m,x,torch.full_like(x,-1))
    return tok.to(dev),tgt.to(dev)
gv=torch.Generator().manual_seed(99); vm=a.vmask if a.vmask is not None else a.mask
VAL=[batch(va,gv,vm,8) for _ in range(a.nval*max(1,256//N))]
gt=torch.Generator().manual_seed(7)
class Plain(nn.Module):
    def __init__(s,d,depth):
        super().__init__(); s.te=nn.Embedding(257,d); s.pe=nn.Embedding(N,d)
        s.enc=nn.TransformerEncoder(nn.TransformerEncoderLayer(d,4,4*d,0.0,batch_first=True,norm_first=True),depth)
        s.out=nn.Linear(d,256); s.ln=nn.LayerNorm(d)
    def forward(s,tok,tgt,mask=None):
        x=s.te(tok)+s.pe(torch.arange(tok.shape[1],device=tok.device)); lg=s.out(s.ln(s.enc(x))); sc=tgt>=0
        return F.cross_entropy(lg[sc],tgt[sc],reduction='sum'),sc.sum(),lg
class MLP(nn.Module):
    # neural n-gram: the embeddings of the ctx bytes each side (mask token included), concatenated, through an MLP
    def __init__(s,d,ctx,hid):
        super().__init__(); s.ctx=ctx; s.te=nn.Embedding(258,d)
        s.net=nn.Sequential(nn.Linear(2*ctx*d,hid),nn.GELU(),nn.Linear(hid,hid),nn.GELU(),nn.Linear(hid,256))
    def forward(s,tok,tgt,mask=None):
        b,n=tok.shape; pad=torch.full((b,s.ctx),257,device=tok.device,dtype=tok.dtype); t=torch.cat([pad,tok,pad],1)
        cols=[t[:,s.ctx+o:s.ctx+o+n] for o in list(range(-s.ctx,0))+list(range(1,s.ctx+1))]
        x=torch.cat([s.te(c) for c in cols],-1); lg=s.net(x); sc=tgt>=0
        return F.cross_entropy(lg[sc],tgt[sc],reduction='sum'),sc.sum(),lg
hv=a.heavy or N//8
if a.model=='mlp':
    model=MLP(a.dim,a.ctx,a.hid)
elif a.model=='plain':
    model=Plain(a.dim,a.depth)
else:
    model=CoLT5ByteModel(dim=a.dim,depth=a.depth,max_seq_len=N,num_heavy_attn_tokens_q=hv,num_heavy_attn_tokens_kv=hv,
      num_routed_kv=1,num_heavy_ff_tokens=hv,light_dim_head=16,light_heads=a.heads,light_window_size=a.window,heavy_dim_head=16,heavy_heads=a.heads,
      light_ff_mult=a.lffm,heavy_ff_mult=a.hffm,router_straight_through=True,
      router_kwargs=dict(n_iters=20,fetch_k_ratio=1.125,eps=a.eps,eps_init=4,eps_decay=0.7),
      multiply_keys_by_score=False,multiply_queries_by_score=False,use_null_q_tokens=True,
      light_rotary_emb=a.rotary,pos_emb_zero_init=a.zero)
model=model.to(dev)
opt=torch.optim.AdamW(param_groups(model,a.wd) if a.model=='colt5' else model.parameters(),lr=a.lr,betas=(0.9,0.999),eps=1e-8,weight_decay=a.wd)
cfg=dict(lr=a.lr,lr_min=a.lrmin,warmup_steps=a.warmup,total_steps=a.steps)
def val():
    model.eval(); s=c=0
    with torch.no_grad():
        for tok,tgt in VAL: l,n,_=model(tok,tgt); s+=l.item(); c+=n.item()
    model.train(); return s/c/math.log(2)
t0=time.time(); res={}; tl=[]
ve=max(1,a.steps//8)
for step in range(1,a.steps+1):
    for g in opt.param_groups: g['lr']=schedule_lr(cfg,step)
    tok,tgt=batch(tr,gt,a.mask); l,n,_=model(tok,tgt); loss=l/n
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(),1.0); opt.step(); tl.append(loss.item())
    if step%ve==0 or step==a.steps:
        v=val(); res[step]=v; print(f'{a.name} step {step} tok {step*B*N/1e6:.2f}M train {sum(tl[-50:])/len(tl[-50:])/math.log(2):.3f} val {v:.3f} x{v/H:.3f} {time.time()-t0:.0f}s',flush=True)
print('RESULT',json.dumps(dict(name=a.name,H=H,res=res,sec=time.time()-t0,params=sum(p.numel() for p in model.parameters()))),flush=True)
