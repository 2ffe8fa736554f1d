// Which failures a stage expects (warned and retried) and which are defects (logged with their stack and counted).
import { describe, expect, it } from 'vitest';
import { FleetSyncError, isKnownFailure } from '../connector/errors.js';

describe('isKnownFailure', () => {
  it.each<[string, unknown, boolean]>([
    ['a fleet-sync error', new FleetSyncError('DATABASE_UNAVAILABLE', 'down'), true],
    ['a PostgreSQL error with its SQLSTATE', Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }), true],
    ['a socket error', Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), true],
    ['node-postgres: the server dropped the connection during a restart', new Error('Connection terminated unexpectedly'), true],
    ['node-postgres: a pool that could not connect in time', new Error('timeout exceeded when trying to connect'), true],
    ['a defect', new TypeError("Cannot read properties of undefined (reading 'uid')"), false],
    ['a thrown string', 'boom', false],
  ])('%s: %s', (_name, error, known) => {
    expect(isKnownFailure(error)).toBe(known);
  });
});
