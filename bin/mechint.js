#!/usr/bin/env node
// The built CLI lives in dist/ (made by `npm install` through the prepare script).
import { main } from '../dist/cli/main.js';

process.exitCode = await main(process.argv);
