// Integer query parameters. The app's ajv never coerces types (JSON bodies are typed, and "1" for 1 is a client's
// bug there), but a query string is text only: `?limit=20` must meet `type: integer` as 20. Only the parameters a
// route declares as integers are converted, and only from plain decimal digits, so `?limit=abc`, `?limit=1.5` or
// `?limit=1&limit=2` still fail the schema with its message ("querystring/limit must be integer").
import type { preValidationAsyncHookHandler } from 'fastify';

interface QuerySchema {
  properties: Record<string, { type?: unknown }>;
}

const DIGITS = /^-?[0-9]{1,16}$/;

export function integerQuery(schema: QuerySchema): preValidationAsyncHookHandler {
  const names = Object.entries(schema.properties)
    .filter(([, p]) => p.type === 'integer')
    .map(([name]) => name);
  return async (request) => {
    const query = request.query as Record<string, unknown>;
    for (const name of names) {
      const value = query[name];
      if (typeof value === 'string' && DIGITS.test(value)) query[name] = Number(value);
    }
  };
}
