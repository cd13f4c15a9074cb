/** Prints the guide's "Analysis options reference": one table per analysis, from its options schema (`npx tsx scripts/docs-options.ts`). */
import { analysisNames, getAnalysis } from '../src/analysis/registry.js';

export function analysisOptionsReference(): string {
  const parts = ['## Analysis options reference', '', 'Generated from each analysis\' options schema (`npx tsx scripts/docs-options.ts`); a test keeps it equal. Every option takes its camelCase or snake_case name; `derived` defaults depend on the layer (D = its width).', ''];
  for (const name of analysisNames()) {
    const def = getAnalysis(name)!;
    parts.push(`### \`${name}\` options`, '', def.options.docsTable(), '');
  }
  return parts.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(analysisOptionsReference());
