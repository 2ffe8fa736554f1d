// The peers bench:peer measures the source against, started as their operators would start them: Debezium's
// PostgreSQL connector on a Kafka Connect standalone worker, and Debezium Server with its Kafka sink. Each gets its
// own folder for configuration, offsets and logs; the jars come from scripts/debezium/fetch.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { Config } from '../../connector/config.js';
import { HEARTBEAT_PREFIX } from '../../connector/source/decoder.js';

/** The Connect worker's producer, tuned for throughput (its `producer.*` settings). */
export const peerProducer = (compression: string): Record<string, string> => ({
  acks: 'all',
  'enable.idempotence': 'true',
  'max.in.flight.requests.per.connection': '5',
  'linger.ms': '20',
  'batch.size': '524288',
  'buffer.memory': '67108864',
  'compression.type': compression,
});

/** Debezium's queue between the replication stream and Connect: four times its defaults (2,048 and 8,192). */
export const PEER_CONNECTOR: Record<string, string> = {
  'max.batch.size': '8192',
  'max.queue.size': '32768',
  'poll.interval.ms': '100',
};

// The launch scripts' JVM options (kafka-run-class.sh, connect-standalone.sh's KAFKA_HEAP_OPTS).
const CONNECT_JVM = [
  '-Xms256M', '-Xmx2G', '-server', '-XX:+UseG1GC', '-XX:MaxGCPauseMillis=20', '-XX:InitiatingHeapOccupancyPercent=35',
  '-XX:+ExplicitGCInvokesConcurrent', '-XX:MaxInlineLevel=15', '-Djava.awt.headless=true',
];

export interface PeerRun {
  /** Where the run's configuration, offsets and logs go. */
  dir: string;
  kafkaBrokers: string;
  databaseUrl: string;
  /** The slot, the publication (on `users`, both made beforehand) and the topic prefix. */
  name: string;
  topics: Pick<Config, 'TOPIC_PARTITIONS' | 'TOPIC_REPLICATION_FACTOR' | 'TOPIC_CLEANUP_POLICY'>;
}

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

const properties = (entries: Record<string, string | number>) =>
  Object.entries(entries)
    .map(([k, v]) => `${k}=${v}`)
    .join('\n') + '\n';

const prefixed = (prefix: string, entries: Record<string, string | number>) => Object.fromEntries(Object.entries(entries).map(([k, v]) => [`${prefix}${k}`, v]));

/** The connector's settings shared by Connect and Debezium Server: stream the slot made before the backlog. */
function connectorSettings(run: PeerRun): Record<string, string | number> {
  const url = new URL(run.databaseUrl);
  return {
    'connector.class': 'io.debezium.connector.postgresql.PostgresConnector',
    'plugin.name': 'pgoutput',
    'database.hostname': url.hostname,
    'database.port': url.port,
    'database.user': decodeURIComponent(url.username),
    'database.password': decodeURIComponent(url.password) || 'unused',
    'database.dbname': url.pathname.slice(1),
    'topic.prefix': run.name,
    'slot.name': run.name,
    'publication.name': run.name,
    'publication.autocreate.mode': 'disabled',
    'table.include.list': 'public.users',
    // The slot was made before the backlog: stream it, no snapshot.
    'snapshot.mode': 'no_data',
    // fleet-sync's heartbeats are logical-decoding messages too; Debezium would publish them to <prefix>.message.
    'message.prefix.exclude.list': HEARTBEAT_PREFIX,
    ...PEER_CONNECTOR,
  };
}

function javaProcess(run: PeerRun, args: string[], logName: string, cwd?: string): ChildProcess {
  const out = createWriteStream(join(run.dir, logName), { flags: 'a' });
  const child = spawn('java', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.pipe(out);
  child.stderr!.pipe(out);
  return child;
}

/** Debezium's PostgreSQL connector in a Kafka Connect standalone worker: its own JVM, like connect-standalone.sh. */
export async function startConnect(jars: string, run: PeerRun, compression: string): Promise<ChildProcess> {
  const dir = join(run.dir, 'connect');
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'worker.properties'),
    properties({
      'bootstrap.servers': run.kafkaBrokers,
      'key.converter': 'org.apache.kafka.connect.json.JsonConverter',
      'value.converter': 'org.apache.kafka.connect.json.JsonConverter',
      'key.converter.schemas.enable': 'false',
      'value.converter.schemas.enable': 'false',
      'offset.storage.file.filename': join(dir, 'offsets'),
      // Debezium confirms the slot's LSN when Connect commits offsets.
      'offset.flush.interval.ms': 10_000,
      listeners: `http://127.0.0.1:${await freePort()}`,
      'plugin.discovery': 'only_scan',
      ...prefixed('producer.', peerProducer(compression)),
    }),
  );
  writeFileSync(
    join(dir, 'connector.properties'),
    properties({
      name: run.name,
      'tasks.max': 1,
      ...connectorSettings(run),
      'topic.creation.default.partitions': run.topics.TOPIC_PARTITIONS,
      'topic.creation.default.replication.factor': run.topics.TOPIC_REPLICATION_FACTOR,
      'topic.creation.default.cleanup.policy': run.topics.TOPIC_CLEANUP_POLICY,
    }),
  );
  writeFileSync(
    join(dir, 'log4j.properties'),
    properties({
      'log4j.rootLogger': 'INFO, file',
      'log4j.appender.file': 'org.apache.log4j.FileAppender',
      'log4j.appender.file.File': join(dir, 'connect.log'),
      'log4j.appender.file.layout': 'org.apache.log4j.PatternLayout',
      'log4j.appender.file.layout.ConversionPattern': '[%d] %p %m (%c)%n',
    }),
  );
  return javaProcess(
    run,
    [
      ...CONNECT_JVM,
      `-Dlog4j.configuration=file:${join(dir, 'log4j.properties')}`,
      '-cp',
      `${jars}/*`,
      'org.apache.kafka.connect.cli.ConnectStandalone',
      join(dir, 'worker.properties'),
      join(dir, 'connector.properties'),
    ],
    'connect.out',
  );
}

/** Debezium Server with its Kafka sink (linger.ms=0), as its run.sh starts it (the distribution's JVM defaults). */
export async function startServer(dist: string, run: PeerRun): Promise<ChildProcess> {
  const dir = join(run.dir, 'server');
  mkdirSync(join(dir, 'conf'), { recursive: true });
  const producer = {
    'bootstrap.servers': run.kafkaBrokers,
    'key.serializer': 'org.apache.kafka.common.serialization.StringSerializer',
    'value.serializer': 'org.apache.kafka.common.serialization.StringSerializer',
    acks: 'all',
    'enable.idempotence': 'true',
    'linger.ms': 0,
  };
  writeFileSync(
    join(dir, 'conf', 'application.properties'),
    properties({
      'debezium.sink.type': 'kafka',
      ...prefixed('debezium.sink.kafka.producer.', producer),
      ...prefixed('debezium.source.', {
        ...connectorSettings(run),
        'offset.storage.file.filename': join(dir, 'offsets.dat'),
        'offset.flush.interval.ms': 0,
      }),
      'debezium.format.key': 'json',
      'debezium.format.value': 'json',
      'debezium.format.key.schemas.enable': 'false',
      'debezium.format.value.schemas.enable': 'false',
      'quarkus.http.port': await freePort(),
      'quarkus.http.host': '127.0.0.1',
      'quarkus.log.console.json': 'false',
    }),
  );
  const runner = execFileSync('sh', ['-c', 'ls debezium-server-*runner.jar'], { cwd: dist, encoding: 'utf8' }).trim();
  return javaProcess(run, ['-cp', `${join(dist, runner)}:${join(dir, 'conf')}:${join(dist, 'lib')}/*`, 'io.debezium.server.Main'], 'server.out', dir);
}
