// The peers bench:peer measures the source against, started as their operators would start them: Debezium's
// PostgreSQL connector on a Kafka Connect standalone worker, and Debezium Server with its Kafka sink. Each gets its
// own folder for configuration, offsets and logs; the jars come from scripts/debezium/fetch, the JDK from javaFor.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import type { Config } from '../../connector/config.js';
import { HEARTBEAT_PREFIX } from '../../connector/source/decoder.js';

/** A Debezium release on the Kafka Connect line it is built and tested against, and the Java it needs. */
export interface Peer {
  /** What --peers names it by. */
  name: string;
  debezium: string;
  connect: string;
  minJava: number;
}

export const PEERS: Record<string, Peer> = {
  '3.6.1': { name: '3.6.1', debezium: '3.6.1.Final', connect: '4.1.1', minJava: 21 },
  '2.7.3': { name: '2.7.3', debezium: '2.7.3.Final', connect: '3.9.1', minJava: 17 },
};

/** A JDK or JRE: its `java` and its major version. */
export interface Java {
  bin: string;
  version: string;
  major: number;
}

const PEER_JAVA_HOME = 'FLEET_SYNC_PEER_JAVA_HOME';
const JVM_DIR = '/usr/lib/jvm';

/** The Java of a home, from its `release` file (JAVA_VERSION="25.0.3"; "1.8.0_x" is 8), or null. */
function javaAt(home: string): Java | null {
  const bin = join(home, 'bin', 'java');
  if (!existsSync(bin)) return null;
  let version: string | undefined;
  try {
    version = /^JAVA_VERSION="([^"]+)"/m.exec(readFileSync(join(home, 'release'), 'utf8'))?.[1];
  } catch {
    // No release file: ask the launcher itself.
    version = /version "([^"]+)"/.exec(execFileSync(bin, ['-version'], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] }))?.[1];
  }
  if (!version) return null;
  const parts = version.split(/[._-]/).map(Number);
  return { bin, version, major: parts[0] === 1 ? parts[1]! : parts[0]! };
}

/** The home of the `java` on the PATH (/usr/bin/java is a chain of links to <home>/bin/java), or null. */
function pathJavaHome(): string | null {
  try {
    const found = execFileSync('sh', ['-c', 'command -v java'], { encoding: 'utf8' }).trim();
    return found ? dirname(dirname(realpathSync(found))) : null;
  } catch {
    return null;
  }
}

/**
 * The Java a peer runs on: $FLEET_SYNC_PEER_JAVA_HOME when set (and it must be new enough), else the `java` on the
 * PATH when it is new enough (what the 2.7.3 figures were measured on), else the newest JDK under /usr/lib/jvm that
 * is. Throws naming what is missing.
 */
export function javaFor(peer: Peer): Java {
  const forced = process.env[PEER_JAVA_HOME];
  if (forced) {
    const java = javaAt(forced);
    if (!java) throw new Error(`${PEER_JAVA_HOME}=${forced} holds no bin/java`);
    if (java.major < peer.minJava) throw new Error(`Debezium ${peer.debezium} needs Java ${peer.minJava} or newer; ${PEER_JAVA_HOME}=${forced} is Java ${java.version}`);
    return java;
  }
  const home = pathJavaHome();
  const onPath = home ? javaAt(home) : null;
  if (onPath && onPath.major >= peer.minJava) return onPath;
  const installed = (existsSync(JVM_DIR) ? readdirSync(JVM_DIR) : [])
    .map((d) => javaAt(join(JVM_DIR, d)))
    .filter((j): j is Java => j !== null)
    .sort((a, b) => b.major - a.major);
  const newest = installed[0];
  if (newest && newest.major >= peer.minJava) return newest;
  const seen = [onPath, ...installed].filter((j): j is Java => j !== null).map((j) => `${j.version} (${j.bin})`);
  throw new Error(
    `Debezium ${peer.debezium} needs Java ${peer.minJava} or newer, and none was found ` +
      `(looked at ${PEER_JAVA_HOME}, the java on the PATH and ${JVM_DIR}/*/release; found ${seen.length ? seen.join(', ') : 'no Java'}): ` +
      `install a JDK ${peer.minJava}+ (Debian: apt-get install openjdk-${peer.minJava}-jre-headless) or set ${PEER_JAVA_HOME} to one`,
  );
}

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

function javaProcess(java: string, run: PeerRun, args: string[], logName: string, cwd?: string): ChildProcess {
  const out = createWriteStream(join(run.dir, logName), { flags: 'a' });
  const child = spawn(java, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.pipe(out);
  child.stderr!.pipe(out);
  return child;
}

/** Connect 3.x logs through log4j 1 (reload4j), Connect 4.x through log4j2: a configuration file and property for each. */
function connectLogging(peer: Peer, dir: string): string {
  const logFile = join(dir, 'connect.log');
  if (peer.connect.startsWith('3.')) {
    writeFileSync(
      join(dir, 'log4j.properties'),
      properties({
        'log4j.rootLogger': 'INFO, file',
        'log4j.appender.file': 'org.apache.log4j.FileAppender',
        'log4j.appender.file.File': logFile,
        'log4j.appender.file.layout': 'org.apache.log4j.PatternLayout',
        'log4j.appender.file.layout.ConversionPattern': '[%d] %p %m (%c)%n',
      }),
    );
    return `-Dlog4j.configuration=file:${join(dir, 'log4j.properties')}`;
  }
  writeFileSync(
    join(dir, 'log4j2.properties'),
    properties({
      status: 'warn',
      'appender.file.type': 'File',
      'appender.file.name': 'file',
      'appender.file.fileName': logFile,
      'appender.file.layout.type': 'PatternLayout',
      'appender.file.layout.pattern': '[%d] %p %m (%c)%n',
      'rootLogger.level': 'info',
      'rootLogger.appenderRef.file.ref': 'file',
    }),
  );
  return `-Dlog4j2.configurationFile=${join(dir, 'log4j2.properties')}`;
}

/** Debezium's PostgreSQL connector in a Kafka Connect standalone worker: its own JVM, like connect-standalone.sh. */
export async function startConnect(peer: Peer, java: Java, jars: string, run: PeerRun, compression: string): Promise<ChildProcess> {
  const dir = join(run.dir, `connect-${peer.name}`);
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
  return javaProcess(
    java.bin,
    run,
    [
      ...CONNECT_JVM,
      connectLogging(peer, dir),
      '-cp',
      `${jars}/*`,
      'org.apache.kafka.connect.cli.ConnectStandalone',
      join(dir, 'worker.properties'),
      join(dir, 'connector.properties'),
    ],
    `connect-${peer.name}.out`,
  );
}

/** Debezium Server with its Kafka sink (linger.ms=0), as its run.sh starts it (the distribution's JVM defaults). */
export async function startServer(java: Java, dist: string, run: PeerRun): Promise<ChildProcess> {
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
  return javaProcess(java.bin, run, ['-cp', `${join(dist, runner)}:${join(dir, 'conf')}:${join(dist, 'lib')}/*`, 'io.debezium.server.Main'], 'server.out', dir);
}
