/** The SAE architectures, registered by name in one place. */
import { ConfigError } from '../errors.js';
import type { SaeArchitecture, SaeArchitectureName } from './sae-common.js';
import { reluArchitecture } from './sae-relu.js';
import { topkArchitecture } from './sae-topk.js';

export const SAE_ARCHITECTURES: Readonly<Record<SaeArchitectureName, SaeArchitecture>> = {
  topk: topkArchitecture,
  relu: reluArchitecture,
};

export function isSaeArchitectureName(value: unknown): value is SaeArchitectureName {
  return typeof value === 'string' && Object.hasOwn(SAE_ARCHITECTURES, value);
}

export function getSaeArchitecture(name: string): SaeArchitecture {
  if (!isSaeArchitectureName(name)) {
    throw new ConfigError(`Expected \`architecture\` to be one of ${Object.keys(SAE_ARCHITECTURES).join(', ')}; got \`${name}\``);
  }
  return SAE_ARCHITECTURES[name];
}
