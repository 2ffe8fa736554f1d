#!/usr/bin/env node
// The fleet-sync command. Runs the TypeScript sources through tsx's loader so a fresh clone needs no build step.
import { register } from 'tsx/esm/api';

register();
await import('../connector/cli.ts');
