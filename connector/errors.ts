// The one list of error codes: each says whether retrying can help (`retriable`) and how the api answers it.
export const ERRORS = {
  CONFIG_INVALID: { retriable: false, status: 500 },
  DB_NOT_LOGICAL: { retriable: false, status: 500 },
  SLOT_WRONG_PLUGIN: { retriable: false, status: 500 },
  PUBLICATION_INCOMPLETE: { retriable: false, status: 500 },
  SCHEMA_INCOMPATIBLE: { retriable: false, status: 500 },
  EVENT_UNDECODABLE: { retriable: false, status: 422 },
  REPLICATION_FAILED: { retriable: true, status: 503 },
  KAFKA_UNAVAILABLE: { retriable: true, status: 503 },
  SOURCE_FENCED: { retriable: false, status: 503 },
  KAFKA_NOT_AUTHORIZED: { retriable: false, status: 503 },
  KAFKA_RECORD_TOO_LARGE: { retriable: false, status: 500 },
  CALL_CENTER_TRANSIENT: { retriable: true, status: 503 },
  CALL_CENTER_REJECTED: { retriable: false, status: 502 },
  CALL_CENTER_USER_MISSING: { retriable: true, status: 502 },
  BAD_REQUEST: { retriable: false, status: 400 },
  VALIDATION_FAILED: { retriable: false, status: 400 },
  BAD_CURSOR: { retriable: false, status: 400 },
  ROLE_NOT_IN_PARK: { retriable: false, status: 400 },
  UNAUTHORIZED: { retriable: false, status: 401 },
  FORBIDDEN: { retriable: false, status: 403 },
  PARK_NOT_FOUND: { retriable: false, status: 404 },
  NOT_FOUND: { retriable: false, status: 404 },
  PAYLOAD_TOO_LARGE: { retriable: false, status: 413 },
  UNSUPPORTED_MEDIA_TYPE: { retriable: false, status: 415 },
  RATE_LIMITED: { retriable: true, status: 429 },
  NOT_READY: { retriable: true, status: 503 },
  DATABASE_UNAVAILABLE: { retriable: true, status: 503 },
  INTERNAL: { retriable: false, status: 500 },
} as const satisfies Record<string, { retriable: boolean; status: number }>;

export type ErrorCode = keyof typeof ERRORS;

export class FleetSyncError extends Error {
  readonly code: ErrorCode;
  readonly retriable: boolean;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; retriable?: boolean; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FleetSyncError';
    this.code = code;
    this.retriable = options?.retriable ?? ERRORS[code].retriable;
    this.status = ERRORS[code].status;
    this.details = options?.details;
  }
}

export function isFleetSyncError(e: unknown, code?: ErrorCode): e is FleetSyncError {
  return e instanceof FleetSyncError && (code === undefined || e.code === code);
}

// node-postgres reports a connection the server dropped (a restart, a failover, an admin's kill) with a plain
// Error and no code: a database going away is an expected condition, retried, not a defect.
const DATABASE_GONE = /Connection terminated( unexpectedly| due to connection timeout)?|Client has encountered a connection error|timeout exceeded when trying to connect/i;

/**
 * Errors a stage expects and retries: ours, PostgreSQL's and the network's (they carry a code), and a database
 * connection that went away. Anything else is a defect: logged with its stack and counted.
 */
export function isKnownFailure(e: unknown): boolean {
  if (isFleetSyncError(e) || typeof (e as { code?: unknown })?.code === 'string') return true;
  return e instanceof Error && DATABASE_GONE.test(e.message);
}
