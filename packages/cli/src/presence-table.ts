/**
 * What `mqrpc list` knows of the servers on a broker, from their retained
 * presence (docs/PROTOCOL.md section 15.1): every instance's last
 * announcement on `{prefix}/p/{serverId}/{instance}`.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { decodeTopicSegment } from "@mqrpc/runtime";
import { Presence_State, PresenceSchema } from "@mqrpc/runtime/proto";

/** The Presence version this CLI understands (PROTOCOL.md: others are ignored). */
const PRESENCE_VERSION = 2;

/** An instance's state as printed: `online`, `offline`, `disconnected`, or `removed` (empty retained payload). */
export type InstanceState = "online" | "offline" | "disconnected" | "unknown" | "removed";

/** A server id's state: online when any instance is, else disconnected when any may come back, else offline. */
export type ServerState = "online" | "disconnected" | "offline";

/** One instance's last announcement. */
export interface InstanceRecord {
  readonly serverId: string;
  readonly instance: string;
  readonly state: InstanceState;
  /** Serves through a shared subscription (a replica). */
  readonly shared: boolean;
  /** Random per process start; another one means the server restarted. */
  readonly incarnation: number;
  /**
   * When the instance entered its state: the server's own time
   * (`Presence.since_ms`), else when this CLI saw the announcement live;
   * undefined for a retained one without it (a last will, an older server).
   */
  readonly since: Date | undefined;
  /** Whether the announcement was retained (sent before this CLI subscribed) rather than seen live. */
  readonly retained: boolean;
}

/** A server id with its instances. */
export interface ServerRecord {
  readonly serverId: string;
  readonly state: ServerState;
  readonly instances: readonly InstanceRecord[];
  /** The latest `since` of an instance in the server's state; undefined when none is known. */
  readonly since: Date | undefined;
}

/** The presence announcements seen, by server id and instance. */
export class PresenceTable {
  private readonly servers = new Map<string, Map<string, InstanceRecord>>();
  private readonly base: string;

  constructor(readonly topicPrefix: string) {
    this.base = `${topicPrefix}/p/`;
  }

  /** The topic filter of every server's presence. */
  get filter(): string {
    return `${this.base}+/+`;
  }

  /**
   * Takes a message from a presence topic; returns the instance's new record
   * when it changed what is known (undefined for a repeat, a message of
   * another protocol version, or a topic or payload that does not parse).
   */
  update(topic: string, payload: Uint8Array, retained: boolean): InstanceRecord | undefined {
    if (!topic.startsWith(this.base)) return undefined;
    const levels = topic.slice(this.base.length).split("/");
    if (levels.length !== 2) return undefined;
    let serverId: string;
    let instance: string;
    try {
      serverId = decodeTopicSegment(levels[0] ?? "");
      instance = decodeTopicSegment(levels[1] ?? "");
    } catch {
      return undefined;
    }
    const since = retained ? undefined : new Date();
    const instances = this.servers.get(serverId);
    const previous = instances?.get(instance);
    if (payload.byteLength === 0) {
      if (previous === undefined || instances === undefined) return undefined;
      instances.delete(instance);
      if (instances.size === 0) this.servers.delete(serverId);
      return { ...previous, state: "removed", since, retained };
    }
    let state: InstanceState;
    let shared: boolean;
    let incarnation: number;
    let announcedSince: Date | undefined;
    try {
      const presence = fromBinary(PresenceSchema, payload);
      if (presence.version !== PRESENCE_VERSION) return undefined;
      state = stateName(presence.state);
      shared = presence.shared;
      incarnation = presence.incarnation;
      // The server's own clock (Presence.since_ms); 0 in a last will or from older servers.
      if (presence.sinceMs > 0n) announcedSince = new Date(Number(presence.sinceMs));
    } catch {
      return undefined;
    }
    if (
      previous !== undefined &&
      previous.state === state &&
      previous.shared === shared &&
      previous.incarnation === incarnation
    ) {
      return undefined;
    }
    const record: InstanceRecord = {
      serverId,
      instance,
      state,
      shared,
      incarnation,
      since: announcedSince ?? since,
      retained,
    };
    if (instances === undefined) this.servers.set(serverId, new Map([[instance, record]]));
    else instances.set(instance, record);
    return record;
  }

  /** Every server id, sorted, with its instances sorted by id. */
  snapshot(): ServerRecord[] {
    const rows: ServerRecord[] = [];
    for (const [serverId, byInstance] of this.servers) {
      const instances = [...byInstance.values()].sort((a, b) => compare(a.instance, b.instance));
      const state: ServerState = instances.some((i) => i.state === "online")
        ? "online"
        : instances.some((i) => i.state === "disconnected")
          ? "disconnected"
          : "offline";
      const inState = instances.filter((i) =>
        state === "online" ? i.state === "online" : i.state !== "online",
      );
      const times = inState.map((i) => i.since?.getTime()).filter((t) => t !== undefined);
      const since = times.length > 0 ? new Date(Math.max(...times)) : undefined;
      rows.push({ serverId, state, instances, since });
    }
    return rows.sort((a, b) => compare(a.serverId, b.serverId));
  }
}

function stateName(state: Presence_State): InstanceState {
  switch (state) {
    case Presence_State.ONLINE:
      return "online";
    case Presence_State.OFFLINE:
      return "offline";
    case Presence_State.DISCONNECTED:
      return "disconnected";
    default:
      return "unknown";
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
