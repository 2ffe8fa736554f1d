// The consumer group's life as log lines: each join (and how long it took), each rebalance and crash, and the first
// batch a member finished after joining. Where a recovery's time goes (a broker restart, a member killed) is read
// from these; kafkajs's own lines for them are at INFO, below what it is let log.
import type { Consumer } from 'kafkajs';
import type { Logger } from '../log.js';

export function logGroupEvents(consumer: Consumer, log: Logger): void {
  let joinedAt = 0;
  let firstBatchLogged = true;
  consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
    joinedAt = Date.now();
    firstBatchLogged = false;
    const partitions = Object.values(payload.memberAssignment).reduce((n, p) => n + p.length, 0);
    log.info({ memberId: payload.memberId, leader: payload.isLeader, partitions, durationMs: payload.duration }, 'joined the consumer group');
  });
  consumer.on(consumer.events.REBALANCING, ({ payload }) => log.info({ memberId: payload.memberId }, 'the consumer group is rebalancing'));
  consumer.on(consumer.events.CRASH, ({ payload }) => log.warn({ err: payload.error.message, restart: payload.restart }, 'the group consumer crashed'));
  consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
    if (firstBatchLogged || payload.batchSize === 0) return;
    firstBatchLogged = true;
    log.info({ topic: payload.topic, partition: payload.partition, events: payload.batchSize, afterJoinMs: Date.now() - joinedAt }, 'first batch after joining done');
  });
}
