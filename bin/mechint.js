#!/usr/bin/env node
// The built CLI lives in dist/ (made by `npm install` through the prepare script).
// The AWS SDK warns on Node 20 about its releases after January 2027 (mechint pins one before);
// the CLI keeps that notice out of its output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  // Answered without loading TensorFlow.js.
  const { readFileSync } = await import('node:fs');
  console.log(JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version);
} else {
  const { main } = await import('../dist/cli/main.js');
  process.exitCode = await main(process.argv);
}
