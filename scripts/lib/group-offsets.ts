// Whether a consumer group has committed every record of some topics: the sink has nothing left to apply.
import type { Admin } from 'kafkajs';

/** Partitions of `topics` where the group's committed offset is behind the end (an empty partition is never behind). */
export async function partitionsBehind(admin: Admin, groupId: string, topics: string[]): Promise<number> {
  const committed = await admin.fetchOffsets({ groupId, topics });
  let behind = 0;
  for (const topic of topics) {
    const at = new Map(committed.find((t) => t.topic === topic)?.partitions.map((p) => [p.partition, BigInt(p.offset)]) ?? []);
    for (const end of await admin.fetchTopicOffsets(topic)) if (BigInt(end.high) > 0n && (at.get(end.partition) ?? -1n) < BigInt(end.high)) behind++;
  }
  return behind;
}

/** The group's offsets are at the end of every one of `topics`. */
export async function groupAtEnds(admin: Admin, groupId: string, topics: string[]): Promise<boolean> {
  return (await partitionsBehind(admin, groupId, topics)) === 0;
}
