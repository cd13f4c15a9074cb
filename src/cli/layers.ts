/** mechint's own custom layers (the demo's NeuroFMX-mini), made known to the model registry for `--model`. */
import { registerLayerModule } from '../model/registry.js';

const DEMO_LAYERS_MODULE = new URL(import.meta.url.endsWith('.ts') ? '../demo/neurofmx-mini.ts' : '../demo/neurofmx-mini.js', import.meta.url).href;

export function registerBuiltinLayerModules(): void {
  registerLayerModule(DEMO_LAYERS_MODULE);
}
