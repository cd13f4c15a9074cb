#!/usr/bin/env node
// The built CLI lives in dist/ (made by `npm install` through the prepare script).
// The AWS SDK warns on Node 20 about its releases after January 2027 (mechint pins one before);
// the CLI keeps that notice out of its output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const { main } = await import('../dist/cli/main.js');

process.exitCode = await main(process.argv);
