// One error handler for the api: Fastify's own errors, FleetSyncError and anything else become `{ code, message }`.
// Bad input always maps to a 4xx; only a real failure (database down, a bug) is a 5xx, and its detail stays in the log.
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { ERRORS, isFleetSyncError, type ErrorCode } from '../connector/errors.js';

export interface ErrorBody {
  code: ErrorCode;
  message: string;
}

// Fastify's content-type parser errors, by their code.
const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'BAD_REQUEST',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'BAD_REQUEST',
  FST_ERR_CTP_INVALID_JSON_BODY: 'BAD_REQUEST',
  FST_ERR_NOT_FOUND: 'NOT_FOUND',
};

// PostgreSQL classes 08 (connection), 53 (resources), 57P (shutdown) and the pool's own timeout mean "database unavailable".
function isDatabaseUnavailable(e: unknown): boolean {
  const err = e as { code?: unknown; message?: unknown };
  const code = typeof err.code === 'string' ? err.code : '';
  if (/^(08|53|57P)/.test(code) || ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EPIPE'].includes(code)) return true;
  const message = typeof err.message === 'string' ? err.message : '';
  return /timeout exceeded when trying to connect|Connection terminated|Client has encountered a connection error/i.test(message);
}

type ValidationItem = { instancePath?: string; message?: string; keyword?: string; params?: Record<string, unknown> };

/** "body/roles/0/role_id must NOT have fewer than 1 characters", "body has unknown field "x"". */
function validationMessage(error: FastifyError): string {
  const item = (error.validation?.[0] ?? {}) as ValidationItem;
  const where = `${error.validationContext ?? 'body'}${item.instancePath ?? ''}`;
  if (item.keyword === 'additionalProperties') return `${where} has unknown field "${String(item.params?.additionalProperty)}"`;
  if (item.keyword === 'required') return `${where} is missing required field "${String(item.params?.missingProperty)}"`;
  return `${where} ${item.message ?? 'is invalid'}`;
}

export function toErrorBody(error: unknown): { status: number; body: ErrorBody } {
  if (isFleetSyncError(error)) return { status: error.status, body: { code: error.code, message: error.message } };
  const fe = error as FastifyError;
  if (fe && Array.isArray(fe.validation)) return { status: 400, body: { code: 'VALIDATION_FAILED', message: validationMessage(fe) } };
  const mapped = fe && typeof fe.code === 'string' ? FASTIFY_CODES[fe.code] : undefined;
  if (mapped) return { status: ERRORS[mapped].status, body: { code: mapped, message: fe.message } };
  // Any other client error Fastify raises (prototype poisoning in JSON, bad headers) is bad input too.
  if (fe && typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return { status: fe.statusCode === 404 ? 404 : 400, body: { code: fe.statusCode === 404 ? 'NOT_FOUND' : 'BAD_REQUEST', message: fe.message } };
  }
  if (isDatabaseUnavailable(error)) return { status: 503, body: { code: 'DATABASE_UNAVAILABLE', message: 'the database is unavailable; retry later' } };
  return { status: 500, body: { code: 'INTERNAL', message: 'internal error' } };
}

export function errorHandler(this: unknown, error: unknown, request: FastifyRequest, reply: FastifyReply): void {
  const { status, body } = toErrorBody(error);
  if (status >= 500) request.log.error({ err: error, code: body.code }, 'request failed');
  else request.log.info({ code: body.code, status }, body.message);
  void reply.code(status).send(body);
}
