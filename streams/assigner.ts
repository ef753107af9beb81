import { AssignerProtocol, type PartitionAssigner } from 'kafkajs';

/**
 * Assigns partition p of every subscribed topic to the same group member.
 *
 * Eddy keys every event by clientId and gives every topic the same partition count, so one
 * client's examples, labels, models and alerts sit in the same partition number of each topic.
 * A processor that folds several of those topics into one per-client state (the trigger
 * processor's read-modify-write of `{clientId}:t`) is only safe if one member owns all of a
 * client's partitions. kafkajs's round-robin assigner deals topic-partitions out in turn, so with
 * two members a client's examples could go to one and its models to the other, and their
 * updates to the same state would race. This is the co-partitioning Kafka Streams enforces.
 *
 * Members are sorted by id; partition p goes to the (p mod n)-th member subscribed to the topic.
 * It is offered before round-robin, so during a rolling upgrade (an old member knows only
 * round-robin) the group falls back to round-robin instead of failing to form.
 */
export const CoPartitionedAssigner: PartitionAssigner = ({ cluster }) => ({
  name: 'EddyCoPartitioned',
  version: 0,
  async assign({ members, topics }) {
    const subscribers = new Map<string, string[]>();
    for (const m of members) {
      const { topics: subscribed } = AssignerProtocol.MemberMetadata.decode(m.memberMetadata) ?? { topics };
      for (const t of subscribed) {
        let list = subscribers.get(t);
        if (!list) subscribers.set(t, (list = []));
        list.push(m.memberId);
      }
    }
    const assignment = new Map<string, Record<string, number[]>>(members.map((m) => [m.memberId, {}]));
    for (const topic of topics) {
      const owners = (subscribers.get(topic) ?? []).sort();
      if (owners.length === 0) continue;
      for (const { partitionId } of cluster.findTopicPartitionMetadata(topic)) {
        const mine = assignment.get(owners[partitionId % owners.length]!)!;
        (mine[topic] ??= []).push(partitionId);
      }
    }
    return [...assignment].map(([memberId, a]) => ({
      memberId,
      memberAssignment: AssignerProtocol.MemberAssignment.encode({ version: 0, assignment: a, userData: Buffer.alloc(0) }),
    }));
  },
  protocol({ topics }) {
    return { name: 'EddyCoPartitioned', metadata: AssignerProtocol.MemberMetadata.encode({ version: 0, topics, userData: Buffer.alloc(0) }) };
  },
});
