// How a request appears in the api's log lines: Fastify's own request fields, with the values of token-like query
// parameters masked, because the status page takes the operator's bearer token as GET /?token= and Fastify logs the URL.

// Broad on purpose: masking a harmless value costs nothing, logging a credential under a new name would leak it.
const SECRET_PARAM = /token|secret|password|passwd|key|auth|credential|signature|session/i;
// The same mark as the logger's redaction (connector/log.ts), so one search finds every masked value.
const CENSOR = '[redacted]';

/** The URL with every token-like query parameter's value masked; the path and other parameters are kept for diagnosis. */
export function urlForLog(url: string): string {
  const q = url.indexOf('?');
  if (q === -1) return url;
  const query = url
    .slice(q + 1)
    .split('&')
    .map((pair) => {
      // The name decoded as Fastify's query parser would, so %74oken= or TOKEN= is masked like token=.
      const name = new URLSearchParams(pair).keys().next().value ?? '';
      return SECRET_PARAM.test(name) ? `${pair.split('=', 1)[0]}=${CENSOR}` : pair;
    })
    .join('&');
  return `${url.slice(0, q)}?${query}`;
}

interface LoggedRequest {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  host: string;
  ip: string;
  socket?: { remotePort?: number } | null;
}

/** The `req` serializer: Fastify's default fields (no headers, so no Authorization), the URL through urlForLog. */
export function requestForLog(request: LoggedRequest) {
  return {
    method: request.method,
    url: urlForLog(request.url),
    version: request.headers['accept-version'],
    host: request.host,
    remoteAddress: request.ip,
    // A serializer must never throw (it would take the process down): a request may have no socket.
    remotePort: request.socket?.remotePort,
  };
}
