/**
 * Serializes the messages of a batched stream in groups: one protobuf-es
 * `toBinary` per group instead of one per message, then hands each message
 * on as a view into the group's bytes. protobuf-es gives every `toBinary`
 * its own buffer and a trimmed copy of it, two off-heap allocations that
 * cost more than encoding a small message; a group shares them.
 *
 * The trick: a message `Group { repeated T messages = 1; }` encodes as the
 * concatenation of `tag(1, LEN) · length · bytes of T` per element, so the
 * element bytes can be cut out of the group's encoding exactly as
 * `toBinary(T, element)` would have produced them. `Group` is a descriptor
 * made at run time, once per message type.
 */
import {
  create,
  createFileRegistry,
  type DescFile,
  type DescMessage,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import { afterThisTurn } from "../flow/event-loop-turn.js";

/** Messages serialized together before they are handed on. */
const GROUP_SIZE = 64;

const groupSchemas = new WeakMap<DescMessage, DescMessage>();

/** The run-time `Group { repeated T messages = 1; }` descriptor for `T`. */
export function groupSchemaOf(message: DescMessage): DescMessage {
  let schema = groupSchemas.get(message);
  if (schema !== undefined) return schema;
  const name = `Group_${message.typeName.replace(/\./g, "_")}`;
  const proto = create(FileDescriptorProtoSchema, {
    name: `mqrpc/internal/group/${message.typeName}.proto`,
    package: "mqrpc.internal.group",
    syntax: "proto3",
    dependency: [message.file.proto.name],
    messageType: [
      {
        name,
        field: [
          {
            name: "messages",
            jsonName: "messages",
            number: 1,
            label: FieldDescriptorProto_Label.REPEATED,
            type: FieldDescriptorProto_Type.MESSAGE,
            typeName: `.${message.typeName}`,
          },
        ],
      },
    ],
  });
  const registry = createFileRegistry(proto, (fileName) => findFile(message.file, fileName));
  schema = registry.getMessage(`mqrpc.internal.group.${name}`);
  if (schema === undefined) throw new Error(`cannot build the group schema of ${message.typeName}`);
  groupSchemas.set(message, schema);
  return schema;
}

function findFile(file: DescFile, fileName: string): DescFile | undefined {
  if (file.proto.name === fileName) return file;
  for (const dependency of file.dependencies) {
    const found = findFile(dependency, fileName);
    if (found !== undefined) return found;
  }
  return undefined;
}

/**
 * Serializes `messages` of type `schema` with one writer and returns each
 * one's bytes, as views into a single buffer.
 */
export function encodeGroup<T extends DescMessage>(
  schema: T,
  messages: readonly MessageShape<T>[],
): Uint8Array[] {
  const group = groupSchemaOf(schema);
  const bytes = toBinary(group, create(group, { messages } as never));
  const views: Uint8Array[] = [];
  let pos = 0;
  while (pos < bytes.byteLength) {
    pos++; // the tag of field 1, LEN: one byte
    let length = 0;
    for (let shift = 0; ; shift += 7) {
      const b = bytes[pos++] as number;
      length |= (b & 0x7f) << shift;
      if (b < 0x80) break;
    }
    length >>>= 0;
    views.push(bytes.subarray(pos, pos + length));
    pos += length;
  }
  return views;
}

/** Where serialized messages go; a promise means "wait before the next". */
export type MessageSink = (bytes: Uint8Array) => Promise<void> | undefined;

/**
 * Collects a stream's messages and serializes them a group at a time: when
 * a group is full, when the producer stops for the current turn, and on
 * {@link flush}. Order is kept, and so is back-pressure: {@link add} returns
 * a promise whenever the sink made the producer wait.
 */
export class MessageGroupEncoder<T extends DescMessage> {
  private pending: MessageShape<T>[] = [];
  private draining: Promise<void> | undefined;
  private turnScheduled = false;

  constructor(
    private readonly schema: T,
    private readonly sink: MessageSink,
    private readonly onError: (error: unknown) => void,
  ) {}

  /** Adds a message; serializes the group when it is full. */
  add(message: MessageShape<T>): Promise<void> | undefined {
    this.pending.push(message);
    if (this.pending.length >= GROUP_SIZE) return this.flush();
    if (!this.turnScheduled) {
      this.turnScheduled = true;
      afterThisTurn(this.onTurnEnd);
    }
    return undefined;
  }

  /** Serializes and hands on everything pending, after what is under way. */
  flush(): Promise<void> | undefined {
    if (this.draining !== undefined) return this.draining.then(() => this.flush());
    if (this.pending.length === 0) return undefined;
    const messages = this.pending;
    this.pending = [];
    const drained = this.drain(encodeGroup(this.schema, messages), 0);
    if (drained === undefined) return undefined;
    const draining = drained.finally(() => {
      if (this.draining === draining) this.draining = undefined;
    });
    this.draining = draining;
    return draining;
  }

  private drain(views: Uint8Array[], from: number): Promise<void> | undefined {
    for (let i = from; i < views.length; i++) {
      const waiting = this.sink(views[i] as Uint8Array);
      if (waiting !== undefined) return waiting.then(() => this.drain(views, i + 1));
    }
    return undefined;
  }

  private readonly onTurnEnd = (): void => {
    this.turnScheduled = false;
    // The producer paused: what it made so far goes out now.
    this.flush()?.catch(this.onError);
  };
}
