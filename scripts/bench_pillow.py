#!/usr/bin/env python3
# Pillow + timm per-image CPU cost, the counterpart of `npm run bench:data` (scripts/bench_data.ts) on the same files.
#
#   python3 scripts/bench_pillow.py DIR [--n 1024] [--mode eval,train] [--size 224] [--procs 1] [--json FILE]
#
# One process, one thread, like one DataLoader worker of timm: for each sample, decode = Image.open(f).convert('RGB')
# (timm's ImageDataset loader), transform = timm's create_transform with use_prefetcher=True (uint8 CHW numpy out,
# what timm's workers hand to the PrefetchLoader; normalization and erasing run on the GPU there):
#   eval:  Resize(floor(size / crop_pct), bicubic) + CenterCrop(size), crop_pct 1.0 (MambaOut), ToNumpy
#   train: RandomResizedCropAndInterpolation(size, (.08, 1), (3/4, 4/3), random) + hflip .5
#          + RandAugment rand-m9-mstd0.5-inc1 (+ jitter .4, which timm ignores when AA is set), ToNumpy
# CPU time is the thread's (time.thread_time), so a busy machine changes it less than wall time.
# --procs 1,8,15: also N processes at once (forked after the imports, like DataLoader workers), each doing --n samples,
# started together at a barrier: aggregate img/s, CPU ms per image and eff = img/s / (N x img/s of 1 process), the
# machine's own scaling for Pillow + timm to set beside bench:data's -j figures (issue 12's 0.9x target).
import argparse, json, os, platform, random, sys, time

import numpy as np
import PIL
from PIL import Image, features

p = argparse.ArgumentParser()
p.add_argument('dir')
p.add_argument('--n', type=int, default=1024)
p.add_argument('--mode', default='eval,train')
p.add_argument('--size', type=int, default=224)
p.add_argument('--crop-pct', type=float, default=1.0)
p.add_argument('--procs', default='')
p.add_argument('--json', default='')
a = p.parse_args()

try:
    import timm
    from timm.data import create_transform
except ImportError as e:  # pragma: no cover - the GPU machine has timm
    sys.exit(f'bench_pillow.py needs timm (and torch): {e}')
try:
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(0)
except ImportError:
    pass

files = []
for root, _, names in os.walk(a.dir):
    files += [os.path.join(root, n) for n in names if n.lower().endswith(('.jpg', '.jpeg', '.png', '.webp'))]
files.sort()
if not files:
    sys.exit(f'no images under {a.dir}')
samples = [files[i % len(files)] for i in range(a.n)]


def make(mode):
    if mode == 'eval':
        return create_transform(a.size, is_training=False, use_prefetcher=True, interpolation='bicubic', crop_pct=a.crop_pct)
    return create_transform(a.size, is_training=True, use_prefetcher=True, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                            hflip=0.5, color_jitter=0.4, auto_augment='rand-m9-mstd0.5-inc1', interpolation='random',
                            re_prob=0.0)


def load(path):
    with open(path, 'rb') as f:
        return Image.open(f).convert('RGB')


try:
    turbo = features.version('libjpeg_turbo') if features.check_feature('libjpeg_turbo') else 'no'
except Exception:  # older Pillow without features.version
    turbo = '?'
print(f'bench_pillow {len(files)} files x {a.n} samples from {a.dir}, {a.size} px; Pillow {PIL.__version__} '
      f'(libjpeg-turbo {turbo}), '
      f'timm {timm.__version__}, python {platform.python_version()}, load {" ".join(f"{v:.1f}" for v in os.getloadavg())}',
      flush=True)
print('| mode | who | img/s (1 thread) | cpu ms/img | decode ms | transform ms |')
print('|---|---|---|---|---|---|')
def run(mode, rank=0):
    """One worker's pass over the samples: (wall s, decode cpu s, transform cpu s)."""
    random.seed(rank)
    np.random.seed(rank)
    tf = make(mode)
    for f in samples[:16]:  # warm-up
        x = tf(load(f))
    if rank == 0 and not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.shape == (3, a.size, a.size)):
        print(f'warning: {mode} transform gives {type(x).__name__} {getattr(x, "dtype", "")} {getattr(x, "shape", "")}, '
              f'expected uint8 (3, {a.size}, {a.size})', flush=True)
    if BARRIER is not None:
        BARRIER.wait()
    dec = tr = 0.0
    t0 = time.perf_counter()
    for f in samples:
        c0 = time.thread_time()
        img = load(f)
        c1 = time.thread_time()
        tf(img)
        c2 = time.thread_time()
        dec += c1 - c0
        tr += c2 - c1
    return time.perf_counter() - t0, dec, tr


BARRIER = None


def _proc(args):
    return run(*args)


def run_procs(mode, n_procs):
    """n_procs forked processes, each run(mode); wall = from the barrier to the last one done."""
    global BARRIER
    import multiprocessing as mp
    ctx = mp.get_context('fork')
    BARRIER = ctx.Barrier(n_procs + 1)
    with ctx.Pool(n_procs) as pool:
        res = pool.map_async(_proc, [(mode, r + 1) for r in range(n_procs)], chunksize=1)
        BARRIER.wait()
        t0 = time.perf_counter()
        out = res.get()
        wall = time.perf_counter() - t0
    BARRIER = None
    return wall, sum(o[1] for o in out), sum(o[2] for o in out)


rows = []
for mode in a.mode.split(','):
    wall, dec, tr = run(mode)
    n = len(samples)
    row = {'mode': mode, 'img_s': round(n / wall, 1), 'cpu_ms': round(1000 * (dec + tr) / n, 2),
           'decode_ms': round(1000 * dec / n, 2), 'transform_ms': round(1000 * tr / n, 2)}
    rows.append(row)
    print(f"| {mode} | Pillow+timm | {row['img_s']} | {row['cpu_ms']:.2f} | {row['decode_ms']:.2f} | {row['transform_ms']:.2f} |",
          flush=True)
procs = [int(v) for v in a.procs.split(',') if v.strip()]
if procs:
    print('| mode | processes | img/s | cpu ms/img | decode ms | transform ms | eff |')
    print('|---|---|---|---|---|---|---|')
for mode in a.mode.split(',') if procs else []:
    one = None
    for k in procs:
        wall, dec, tr = run_procs(mode, k)
        n = len(samples) * k
        ips = n / wall
        if k == 1:
            one = ips
        eff = round(ips / (k * one), 3) if one else None
        row = {'mode': mode, 'procs': k, 'img_s': round(ips, 1), 'cpu_ms': round(1000 * (dec + tr) / n, 2),
               'decode_ms': round(1000 * dec / n, 2), 'transform_ms': round(1000 * tr / n, 2), 'eff': eff}
        rows.append(row)
        print(f"| {mode} | {k} | {row['img_s']} | {row['cpu_ms']:.2f} | {row['decode_ms']:.2f} | {row['transform_ms']:.2f} | "
              f"{'-' if eff is None else f'{eff:.2f}'} |", flush=True)
if a.json:
    with open(a.json, 'w') as f:
        json.dump({'pillow': PIL.__version__, 'timm': timm.__version__, 'rows': rows}, f)
