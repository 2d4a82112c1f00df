#!/usr/bin/env python3
# Pillow + timm per-image CPU cost, the counterpart of `npm run bench:data` (scripts/bench_data.ts) on the same files.
#
#   python3 scripts/bench_pillow.py DIR [--n 1024] [--mode eval,train] [--size 224] [--json FILE]
#
# One process, one thread, like one DataLoader worker of timm: for each sample, decode = Image.open(f).convert('RGB')
# (timm's ImageDataset loader), transform = timm's create_transform with use_prefetcher=True (uint8 CHW numpy out,
# what timm's workers hand to the PrefetchLoader; normalization and erasing run on the GPU there):
#   eval:  Resize(floor(size / crop_pct), bicubic) + CenterCrop(size), crop_pct 1.0 (MambaOut), ToNumpy
#   train: RandomResizedCropAndInterpolation(size, (.08, 1), (3/4, 4/3), random) + hflip .5
#          + RandAugment rand-m9-mstd0.5-inc1 (+ jitter .4, which timm ignores when AA is set), ToNumpy
# CPU time is the thread's (time.thread_time), so a busy machine changes it less than wall time.
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
rows = []
for mode in a.mode.split(','):
    random.seed(0)
    np.random.seed(0)
    tf = make(mode)
    for f in samples[:16]:  # warm-up
        x = tf(load(f))
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.shape == (3, a.size, a.size)):
        print(f'warning: {mode} transform gives {type(x).__name__} {getattr(x, "dtype", "")} {getattr(x, "shape", "")}, '
              f'expected uint8 (3, {a.size}, {a.size})', flush=True)
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
    wall = time.perf_counter() - t0
    n = len(samples)
    row = {'mode': mode, 'img_s': round(n / wall, 1), 'cpu_ms': round(1000 * (dec + tr) / n, 2),
           'decode_ms': round(1000 * dec / n, 2), 'transform_ms': round(1000 * tr / n, 2)}
    rows.append(row)
    print(f"| {mode} | Pillow+timm | {row['img_s']} | {row['cpu_ms']:.2f} | {row['decode_ms']:.2f} | {row['transform_ms']:.2f} |",
          flush=True)
if a.json:
    with open(a.json, 'w') as f:
        json.dump({'pillow': PIL.__version__, 'timm': timm.__version__, 'rows': rows}, f)
