// `npm run simulator -- --port 8090 --token T ...`: the call-center simulator as a standalone process for
// development and demos (a development tool, not production). Prints its URL on stdout; stops on SIGTERM/SIGINT.
import { Command, InvalidArgumentError } from 'commander';
import { createLogger } from '../connector/log.js';
import { createSimulator } from './simulator.js';

function number(min: number, max = Infinity) {
  return (text: string): number => {
    const n = Number(text);
    if (text.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`expected a number within ${min}..${max}`);
    return n;
  };
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

const program = new Command('simulator')
  .description('In-memory call center speaking SPEC §5, with fault injection. A development tool, not production.')
  .option('--port <port>', 'port to listen on (0: any free port)', number(0, 65535), 8090)
  .option('--host <host>', 'address to listen on', '127.0.0.1')
  .option('--token <token>', 'bearer token clients must send (default: $CALL_CENTER_TOKEN or the config default)')
  .option('--error-rate <share>', 'share of /v1 requests answered 500/502/503', number(0, 1), 0)
  .option('--latency-ms <ms>', 'delay added to every /v1 request', number(0), 0)
  .option('--rate-limit-rate <share>', 'share of /v1 requests answered 429', number(0, 1), 0)
  .option('--retry-after-s <s>', 'Retry-After seconds sent with a 429', number(0), 1)
  .option('--reject-uid <uid>', 'answer 422 to any call about this uid (repeatable)', collect, [] as string[])
  .option('--seed <n>', 'seed of the fault PRNG, for repeatable runs', number(0), 1)
  .option('--log-level <level>', 'pino level', 'info')
  .action(async (o: {
    port: number; host: string; token?: string; errorRate: number; latencyMs: number; rateLimitRate: number;
    retryAfterS: number; rejectUid: string[]; seed: number; logLevel: string;
  }) => {
    const log = createLogger(o.logLevel);
    const sim = createSimulator({
      token: o.token ?? process.env.CALL_CENTER_TOKEN ?? 'dev-call-center-token',
      seed: o.seed,
      log,
      faults: { errorRate: o.errorRate, latencyMs: o.latencyMs, rateLimitRate: o.rateLimitRate, retryAfterS: Math.floor(o.retryAfterS), rejectUids: o.rejectUid },
    });
    const url = await sim.start(o.port, o.host);
    process.stdout.write(`${url}\n`);
    log.info({ url, faults: sim.faults(), seed: o.seed }, 'call-center simulator listening');
    const stop = async (signal: string) => {
      log.info({ signal }, 'call-center simulator stopping');
      await sim.stop();
      // Exit explicitly: a launcher's IPC channel (tsx) would otherwise keep the process alive.
      log.flush(() => process.exit(0));
    };
    process.once('SIGTERM', () => void stop('SIGTERM'));
    process.once('SIGINT', () => void stop('SIGINT'));
  });

await program.parseAsync();
