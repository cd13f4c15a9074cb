#!/usr/bin/python3
"""Writes the .pt and .npy fixtures of test/fixtures/torch/ with real PyTorch and NumPy, and
expected.json with the values each reader must return (row-major, as floats or ints).

Run with Debian's python3-torch: /usr/bin/python3 scripts/make-torch-fixtures.py
The files are small and committed; rerun only to change them.
"""
import collections
import json
import os
import sys

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'torch')
# The hostile fixture runs `touch` on this path when unpickled by plain pickle/torch.load.
MARKER = '/tmp/mechint-hostile-pickle-marker'

torch.manual_seed(0)
np.random.seed(0)
os.makedirs(OUT, exist_ok=True)
expected = {'pt': {}, 'npy': {}, 'marker': MARKER}

TORCH_DTYPES = {
    torch.float32: 'F32', torch.float16: 'F16', torch.bfloat16: 'BF16', torch.float64: 'F64',
    torch.int64: 'I64', torch.int32: 'I32', torch.int16: 'I16', torch.int8: 'I8', torch.uint8: 'U8',
    torch.bool: 'BOOL',
}


def describe(t):
    # Values as PyTorch sees them, flattened row-major; low-precision floats widened exactly.
    if t.dtype in (torch.float16, torch.bfloat16):
        values = t.float().flatten().tolist()
    elif t.dtype == torch.bool:
        values = [int(v) for v in t.flatten().tolist()]
    else:
        values = t.flatten().tolist()
    return {'dtype': TORCH_DTYPES[t.dtype], 'shape': list(t.shape), 'values': values}


def meta(v):
    # The reader's rule: strings as they are, everything else as JSON.
    return v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))


def save_pt(name, obj, tensors, metadata=None):
    torch.save(obj, os.path.join(OUT, name))
    expected['pt'][name] = {
        'tensors': {k: describe(v) for k, v in tensors.items()},
        'metadata': {k: meta(v) for k, v in (metadata or {}).items()},
    }


# The original system's shard layout, a 2-D and a 3-D layer.
a2 = torch.randn(4, 3)
a3 = torch.randn(2, 3, 4)
save_pt('activations_shard_000000_step_0.pt',
        {'global_step': 0, 'shard_id': 0, 'activations': {'encoder.layer0': a2, 'mamba_backbone.blocks.1': a3},
         'metadata': {'epoch': 1, 'model': 'neurofmx', 'lr': 0.5}},
        {'encoder.layer0': a2, 'mamba_backbone.blocks.1': a3},
        {'global_step': 0, 'shard_id': 0, 'epoch': 1, 'model': 'neurofmx', 'lr': 0.5})

# A layer stored as a list of per-step tensors, concatenated along dim 0 by the reader.
l1, l2 = torch.randn(2, 5), torch.randn(3, 5)
save_pt('activations_shard_000001_step_200.pt',
        {'global_step': 200, 'shard_id': 1, 'activations': {'blocks.0': [l1, l2]}, 'metadata': {}},
        {'blocks.0': torch.cat([l1, l2], 0)}, {'global_step': 200, 'shard_id': 1})

h = torch.randn(3, 4).half()
save_pt('float16.pt', {'h': h}, {'h': h})

b = torch.randn(2, 3).to(torch.bfloat16)
save_pt('bfloat16.pt', {'b': b}, {'b': b})
d = torch.randn(5, 2, dtype=torch.float64)
save_pt('float64.pt', {'d': d}, {'d': d})
i64 = torch.arange(-6, 6, dtype=torch.int64).reshape(3, 4) * 1000003
i32 = torch.arange(10, dtype=torch.int32)
u8 = torch.arange(250, 256, dtype=torch.uint8)
mask = torch.tensor([True, False, True])
save_pt('ints.pt', {'i64': i64, 'i32': i32, 'u8': u8, 'mask': mask}, {'i64': i64, 'i32': i32, 'u8': u8, 'mask': mask})

# Non-contiguous views: a transpose (stride (1, 4)) and a slice with a storage offset.
base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
tr = base.t()
assert not tr.is_contiguous()
sl = base[1:, 1::2]
assert sl.storage_offset() > 0 and not sl.is_contiguous()
save_pt('transposed.pt', {'t': tr, 'sliced': sl}, {'t': tr, 'sliced': sl})

od = collections.OrderedDict([('weight', torch.randn(2, 2)), ('bias', torch.randn(2))])
save_pt('ordered_dict.pt', od, dict(od))

bare = torch.randn(2, 3)
save_pt('bare_tensor.pt', bare, {'tensor': bare})

# Non-finite values: NaN and ±Inf inside a tensor, and as metadata floats (a diverged run's loss).
# Its expectations are in the test (JSON cannot hold NaN), not in expected.json.
nonfinite = torch.tensor([[float('nan'), float('inf')], [float('-inf'), -0.0], [1.5, float('nan')]])
torch.save({'global_step': 7, 'shard_id': 2, 'activations': {'layer': nonfinite},
            'metadata': {'loss': float('nan'), 'best': float('inf'), 'worst': float('-inf'), 'lr': 0.25,
                         'history': [1.0, float('nan')], 'epoch': 3}},
           os.path.join(OUT, 'nonfinite.pt'))

# Pre-1.6 format: a sequence of pickles, not a zip.
torch.save(torch.ones(2), os.path.join(OUT, 'legacy.pt'), _use_new_zipfile_serialization=False)


class Hostile:
    def __reduce__(self):
        return (os.system, ('touch ' + MARKER,))


torch.save({'activations': {'x': torch.zeros(1)}, 'payload': Hostile()}, os.path.join(OUT, 'hostile.pt'))

# .npy files: C and Fortran order, several dtypes, format versions 1, 2 and 3.
NPY = {
    'c_f4.npy': (np.random.randn(3, 4).astype('<f4'), 'C', (1, 0)),
    'fortran_f8.npy': (np.asfortranarray(np.random.randn(3, 4)), 'F', (1, 0)),
    'fortran_i2_3d.npy': (np.asfortranarray(np.arange(24, dtype='<i2').reshape(2, 3, 4) - 7), 'F', (1, 0)),
    'f2.npy': (np.random.randn(5).astype('<f2'), 'C', (1, 0)),
    'u1.npy': (np.arange(250, 256, dtype='u1').reshape(2, 3), 'C', (1, 0)),
    'i8_v2.npy': (np.arange(-3, 3, dtype='<i8') * 10**12, 'C', (2, 0)),
    'u4_v3.npy': (np.arange(6, dtype='<u4').reshape(3, 2), 'C', (3, 0)),
    'b1.npy': (np.array([True, False, True, True]), 'C', (1, 0)),
    'i1.npy': (np.array([-128, -1, 0, 127], dtype='i1'), 'C', (1, 0)),
    'scalar_f4.npy': (np.array(1.5, dtype='<f4'), 'C', (1, 0)),
    'empty_f4.npy': (np.zeros((0, 3), dtype='<f4'), 'C', (1, 0)),
}
NPY_DTYPES = {'f2': 'F16', 'f4': 'F32', 'f8': 'F64', 'i1': 'I8', 'i2': 'I16', 'i4': 'I32', 'i8': 'I64',
              'u1': 'U8', 'u2': 'U16', 'u4': 'U32', 'u8': 'U64', 'b1': 'BOOL'}
for name, (arr, order, version) in NPY.items():
    with open(os.path.join(OUT, name), 'wb') as f:
        np.lib.format.write_array(f, arr, version=version)
    flat = np.ascontiguousarray(arr).flatten()
    values = [int(v) for v in flat] if arr.dtype.kind in 'iub' else [float(v) for v in flat]
    expected['npy'][name] = {'dtype': NPY_DTYPES[arr.dtype.str[1:]], 'shape': list(arr.shape),
                             'values': values, 'order': order, 'version': list(version)}

with open(os.path.join(OUT, 'expected.json'), 'w') as f:
    json.dump(expected, f, indent=1)
    f.write('\n')
print('wrote', len(expected['pt']), 'pt and', len(expected['npy']), 'npy fixtures to', os.path.normpath(OUT), file=sys.stderr)
