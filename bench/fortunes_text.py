"""fortunes_text.py - write the fortunes package's text as one file (every
fortune of /usr/share/games/fortunes, '%' lines dropped, shuffled by a fixed
seed) for bench/mask_sweep.py and bench/mask_bound.py: the same bytes and
unigram entropy (4.76 bits) as colt5-train's default data, in another order.

    python3 bench/fortunes_text.py text.bin
"""
import glob
import os
import random
import sys

fortunes = []
for f in sorted(glob.glob('/usr/share/games/fortunes/*')):
    if f.endswith('.dat') or os.path.islink(f) or not os.path.isfile(f):
        continue
    cur = []
    for line in open(f, 'rb').read().split(b'\n'):
        if line == b'%':
            if cur:
                fortunes.append(b'\n'.join(cur) + b'\n')
            cur = []
        else:
            cur.append(line)
    if cur:
        fortunes.append(b'\n'.join(cur) + b'\n')
random.Random(1).shuffle(fortunes)
open(sys.argv[1], 'wb').write(b''.join(fortunes))
