/**
 * Co-partitioned assignment: partition p of every subscribed topic goes to the same group member.
 *
 * Eddy keys every event by clientId and gives every topic the same partition count, so one
 * client's examples, labels, models and alerts sit in the same partition number of each topic.
 * A processor that folds several of those topics into one per-client state (the trigger
 * processor's read-modify-write of `{clientId}:t`) is only safe if one member owns all of a
 * client's partitions. A round-robin assignor deals topic-partitions out in turn, so with two
 * members a client's examples could go to one and its models to the other, and their updates to
 * the same state would race. This is the co-partitioning Kafka Streams enforces.
 *
 * Members are sorted by id; partition p goes to the (p mod n)-th member subscribed to the topic.
 */
export function coPartitionedAssignment(
  members: ReadonlyArray<{ memberId: string; topics: readonly string[] }>,
  topics: Iterable<string>,
  partitionsOf: (topic: string) => readonly number[],
): Map<string, Record<string, number[]>> {
  const subscribers = new Map<string, string[]>();
  for (const m of members) {
    for (const t of m.topics) {
      let list = subscribers.get(t);
      if (!list) subscribers.set(t, (list = []));
      list.push(m.memberId);
    }
  }
  const assignment = new Map<string, Record<string, number[]>>(members.map((m) => [m.memberId, {}]));
  for (const topic of topics) {
    const owners = (subscribers.get(topic) ?? []).sort();
    if (owners.length === 0) continue;
    for (const partition of [...partitionsOf(topic)].sort((a, b) => a - b)) {
      const mine = assignment.get(owners[partition % owners.length]!)!;
      (mine[topic] ??= []).push(partition);
    }
  }
  return assignment;
}
