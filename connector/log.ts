// The root pino logger; modules take child loggers with structured fields. Secrets are redacted here, once.
import { pino, destination, type DestinationStream, type Logger } from 'pino';

export type { Logger };

export const REDACT_PATHS = [
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'req.headers.authorization',
  'CALL_CENTER_TOKEN',
  'API_TOKENS',
  'DATABASE_URL',
  '*.CALL_CENTER_TOKEN',
  '*.API_TOKENS',
  '*.DATABASE_URL',
  'password',
  '*.password',
];

/** Logs go to stderr so that commands writing data (replay --to stdout) keep stdout clean. */
export function createLogger(level: string, dest?: DestinationStream): Logger {
  return pino(
    { level, base: { service: 'fleet-sync' }, redact: { paths: REDACT_PATHS, censor: '[redacted]' } },
    dest ?? destination({ fd: 2, sync: false }),
  );
}
