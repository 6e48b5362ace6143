"""mask_bound.py - what the nearest unmasked byte on each side can tell about a
masked byte: the cross-entropy, on masked validation bytes (colt5-train's masking:
15% of each 256-byte sequence in spans of 1..5), of a count model of
p(byte | nearest unmasked byte left and its distance, the same right), counted
on every position of the training text and interpolated with the unigram
(Witten-Bell): an estimate of the conditional entropy given that context, the
floor of any model that uses no more than that (BENCHMARKS.md, "Choosing the defaults").

    python3 bench/mask_bound.py text.bin
"""
import sys
import numpy as np, math
t=np.frombuffer(open(sys.argv[1],'rb').read(),dtype=np.uint8).astype(np.int64)
nv=int(len(t)*0.05); tr,va=t[:-nv],t[-nv:]
rng=np.random.default_rng(0)
def masks(n,N=256):
    m=np.zeros(n,bool)
    for s0 in range(0,n-N,N):
        seg=np.zeros(N,bool)
        while seg.sum()<0.15*N:
            L=rng.integers(1,6); s=rng.integers(0,N-L+1); seg[s:s+L]=True
        m[s0:s0+N]=seg
    return m
mv=masks(len(va)); idx=np.where(mv)[0]
# nearest unmasked left/right distance for each masked val pos
dl=np.zeros(len(idx),int); dr=np.zeros(len(idx),int)
for q,i in enumerate(idx):
    j=i-1
    while j>=0 and mv[j]: j-=1
    dl[q]=i-j
    j=i+1
    while j<len(va) and mv[j]: j+=1
    dr[q]=j-i
ok=(idx-dl>=0)&(idx+dr<len(va)); idx,dl,dr=idx[ok],dl[ok],dr[ok]
print('dist hist', np.bincount(np.minimum(dl,8)), np.bincount(np.minimum(dr,8)))
uni=np.bincount(tr,minlength=256)/len(tr); H=-(uni[uni>0]*np.log2(uni[uni>0])).sum()
tot=0; 
for a in range(1,7):
  for b in range(1,7):
    sel=(dl==a)&(dr==b)
    if not sel.any(): continue
    n=len(tr)
    i=np.arange(a,n-b)
    key=(tr[i-a]*256+tr[i+b])*256+tr[i]
    ck=np.bincount(key,minlength=256**3).reshape(256*256,256).astype(np.float64)
    ctx=ck.sum(1); u=(ck>0).sum(1)
    vi=idx[sel]; c=va[vi-a]*256+va[vi+b]; y=va[vi]
    lam=ctx[c]/(ctx[c]+u[c]+1e-12)
    p=lam*ck[c,y]/np.maximum(ctx[c],1)+(1-lam)*uni[y]
    tot+=(-np.log2(p)).sum()
print('bits',tot/len(idx),'x',tot/len(idx)/H,'H',H,len(idx))
