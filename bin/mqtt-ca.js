#!/usr/bin/env node
// The installed command runs the compiled CLI (npm run build).
import '../dist/src/cli.js';
