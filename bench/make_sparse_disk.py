#!/usr/bin/env python3
"""Write a sparse raw test disk: PATH of SIZE bytes, about 25% allocated in runs of 1..64 MiB,
one run in eight zero-filled (allocated but zero). Seeded, so the layout is the same every run.

    bench/make_sparse_disk.py PATH SIZE_BYTES
"""
import os
import random
import sys

path, size = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
mib = 1 << 20
done = 0
with open(path, 'wb') as f:
    f.truncate(size)
    while done < size // 4:
        run = rnd.randint(1, 64) * mib
        off = rnd.randrange(0, size // mib) * mib
        run = min(run, size - off)
        f.seek(off)
        f.write(bytes(run) if rnd.random() < 0.125 else os.urandom(run))
        done += run
