#!/usr/bin/python3
"""Writes test/fixtures/original-cache/: a cache laid out exactly as the original (Python) system's
hooks.py writes it, with real PyTorch, and expected.json with the values NumPy reads from it.

What the original does (see /work/shared/REFERENCE.md, "The original system's cache"):
- ActivationSampler.save_activations: torch.cat of the captured batches per layer, then
  torch.save({global_step, shard_id, activations: {layer: tensor}, metadata: {global_step, epoch,
  batch_idx, "<layer>_shape": [...]}}, os.path.join(save_dir, f"activations_shard_{id:06d}_step_{step}.pt"))
  and appends that path to saved_shards;
- MechIntHooks.on_train_end: json.dump({config: asdict(config), shards: saved_shards, total_shards,
  analysis_history: []}, open(os.path.join(storage_path, 'manifest.json'), 'w'), indent=2).
The run's working directory is the fixture folder, so paths read "mechint_cache/activations_shard_...".

Run with Debian's python3-torch: /usr/bin/python3 scripts/make-original-cache.py
"""
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'original-cache')
os.makedirs(ROOT, exist_ok=True)
os.chdir(ROOT)  # the training run's working directory

config = {
    'sample_layers': ['mamba_backbone.blocks.3', 'popt', 'encoder.norm'],
    'save_hidden_every_n_steps': 200,
    'analyses_to_run': ['sae', 'neuron', 'feature'],
    'storage_backend': 'local',
    'storage_path': 'mechint_cache',
    's3_bucket': None,
    's3_prefix': 'neurofmx/activations',
    'max_activations_per_shard': 10000,
    'enable_feature_steering': False,
    'verbose': True,
}
save_dir = config['storage_path']
os.makedirs(save_dir, exist_ok=True)
for f in os.listdir(save_dir):
    os.remove(os.path.join(save_dir, f))

torch.manual_seed(14)
saved_shards = []
expected = {'config': config, 'shards': {}}
for shard_id, (global_step, epoch, batch_idx) in enumerate([(0, 0, 0), (200, 0, 200), (400, 1, 100)]):
    # Two captured batches per interval, concatenated along dim 0 as the original does.
    acts = {
        'mamba_backbone.blocks.3': torch.cat([torch.randn(2, 3, 4), torch.randn(3, 3, 4)], 0),  # [N, T, D]
        'popt': torch.cat([torch.randn(2, 6), torch.randn(3, 6)], 0),  # [N, D]
        'encoder.norm': torch.cat([torch.randn(2, 5), torch.randn(3, 5)], 0).to(torch.bfloat16),  # autocast
    }
    metadata = {'global_step': global_step, 'epoch': epoch, 'batch_idx': batch_idx}
    for name, t in acts.items():
        metadata[f'{name}_shape'] = list(t.shape)
    path = os.path.join(save_dir, f'activations_shard_{shard_id:06d}_step_{global_step}.pt')
    torch.save({'global_step': global_step, 'shard_id': shard_id, 'activations': acts, 'metadata': metadata}, path)
    saved_shards.append(path)
    # What NumPy reads: float32 values (bf16 widened exactly), row-major.
    expected['shards'][os.path.basename(path)] = {
        'global_step': global_step,
        'layers': {name: {'shape': list(t.shape), 'values': t.float().numpy().astype(np.float64).ravel().tolist()} for name, t in acts.items()},
    }

manifest = {'config': config, 'shards': saved_shards, 'total_shards': len(saved_shards), 'analysis_history': []}
with open(os.path.join(config['storage_path'], 'manifest.json'), 'w') as f:
    json.dump(manifest, f, indent=2)

with open('expected.json', 'w') as f:
    json.dump(expected, f, indent=1)
    f.write('\n')
print('wrote', len(saved_shards), 'shards and manifest.json to', os.path.normpath(os.path.join(ROOT, save_dir)), file=sys.stderr)
