// docker-compose.yml without a Docker engine: the file is parsed and checked for what `docker compose up` relies on —
// health checks, restart policies, start order on health, and fleet-sync variables the config schema knows.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { configSchema, loadConfig } from '../connector/config.js';

interface Service {
  image?: string;
  command?: string[] | string;
  environment?: Record<string, string | number>;
  depends_on?: Record<string, { condition: string }>;
  restart?: string;
  healthcheck?: { test?: string[] | string; interval?: string; retries?: number };
  ports?: string[];
}

const root = new URL('..', import.meta.url);
const compose = parse(readFileSync(new URL('docker-compose.yml', root), 'utf8')) as { services: Record<string, Service> };
const packageJson = JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as { scripts: Record<string, string> };
const { services } = compose;
const commandOf = (s: Service) => (Array.isArray(s.command) ? s.command.join(' ') : (s.command ?? ''));

describe('docker-compose.yml', () => {
  it('runs PostgreSQL, Kafka, the call-center simulator and fleet-sync', () => {
    expect(Object.keys(services)).toEqual(expect.arrayContaining(['postgres', 'kafka', 'callcenter', 'fleet-sync']));
  });

  it('gives every service a health check with a command', () => {
    for (const [name, service] of Object.entries(services)) {
      const test = service.healthcheck?.test;
      expect(test, `${name} has no healthcheck.test`).toBeDefined();
      expect(Array.isArray(test) ? test.length > 1 && test[0] !== 'NONE' : String(test).length > 0, `${name}'s health check is empty`).toBe(true);
    }
  });

  it('restarts fleet-sync and the simulator unless they were stopped', () => {
    expect(services['fleet-sync']!.restart).toBe('unless-stopped');
    expect(services.callcenter!.restart).toBe('unless-stopped');
  });

  it('starts fleet-sync only once Kafka, PostgreSQL and the call center are healthy', () => {
    const dependsOn = services['fleet-sync']!.depends_on ?? {};
    expect(dependsOn.kafka).toEqual({ condition: 'service_healthy' });
    expect(dependsOn.postgres).toEqual({ condition: 'service_healthy' });
    expect(dependsOn.callcenter).toEqual({ condition: 'service_healthy' });
  });

  it('sets for fleet-sync only variables the config schema knows, with values it accepts', () => {
    const env = Object.fromEntries(Object.entries(services['fleet-sync']!.environment ?? {}).map(([k, v]) => [k, String(v)]));
    const known = Object.keys(configSchema.shape);
    expect(Object.keys(env).filter((name) => !known.includes(name))).toEqual([]);
    const config = loadConfig(env);
    // The call center fleet-sync calls is the simulator service, on the port the simulator listens on.
    const callCenter = new URL(config.CALL_CENTER_URL);
    expect(callCenter.hostname).toBe('callcenter');
    expect(commandOf(services.callcenter!)).toContain(`--port ${callCenter.port}`);
    expect(services['fleet-sync']!.ports).toContain(`${config.API_PORT}:${config.API_PORT}`);
    expect(JSON.stringify(services['fleet-sync']!.healthcheck?.test)).toContain(`:${config.API_PORT}/readyz`);
  });

  it('runs the simulator from simulator/ through the npm script, and fleet-sync through its bin', () => {
    expect(commandOf(services.callcenter!)).toMatch(/npm run -s simulator/);
    const script = packageJson.scripts.simulator!;
    const file = /tsx (\S+)/.exec(script)?.[1];
    expect(file).toBe('simulator/main.ts');
    expect(existsSync(fileURLToPath(new URL(file!, root)))).toBe(true);
    expect(readFileSync(new URL('docker-compose.yml', root), 'utf8')).not.toContain('test/simulator');
    expect(commandOf(services['fleet-sync']!)).toMatch(/fleet-sync migrate && exec npx fleet-sync all/);
  });
});
