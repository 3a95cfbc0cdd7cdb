/**
 * The ingress's transports, one per device it forwards to: created on the
 * first call, shared by that device's calls, closed when idle, bounded in
 * number. All of them are given the same `mqtt` input, so the runtime runs
 * them over one MQTT connection (one reply subscription), whatever the
 * number of devices. Each device's schema (for JSON and Connect calls) is
 * kept beside its transport, with a time to live.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  createMqttTransport,
  type MqttConnectionInput,
  type MqttTransport,
  type MqttTransportOptions,
} from "@mqrpc/runtime";
import type { DeviceSchema } from "./device-schema.js";

/** Transport options the ingress passes to each device's transport. */
export type DeviceTransportOptions = Omit<
  MqttTransportOptions,
  "mqtt" | "serverId" | "topicPrefix"
>;

/** Settings of {@link DeviceTransports}. */
export interface DeviceTransportsSettings {
  readonly mqtt: MqttConnectionInput;
  readonly topicPrefix: string | undefined;
  readonly transport: DeviceTransportOptions;
  /** How long a transport without calls stays open, in ms. */
  readonly idleMs: number;
  /** Most devices with an open transport at once. */
  readonly maxDevices: number;
}

/** A device's schema and the Connect handler built on it, as cached. */
export interface DeviceSchemaEntry {
  readonly schema: DeviceSchema;
  readonly handler: ReturnType<typeof connectNodeAdapter>;
}

/** One device the ingress talks to. */
export class DeviceEntry {
  /** Calls in flight (and schema look-ups) holding the transport. */
  holds = 0;
  idleTimer: NodeJS.Timeout | undefined;
  /**
   * The cached schema look-up, when it expires (ms since the epoch), and
   * its result once it has one (for raw calls, which never wait for it).
   */
  schema:
    | {
        readonly expires: number;
        readonly entry: Promise<DeviceSchemaEntry>;
        ready?: DeviceSchemaEntry;
      }
    | undefined;

  constructor(
    readonly serverId: string,
    readonly transport: MqttTransport,
  ) {}
}

/** The per-device transports of an ingress. */
export class DeviceTransports {
  /** In order of last use, least recent first. */
  private readonly devices = new Map<string, DeviceEntry>();
  /** The entry last in {@link devices}, which a call to the same device need not move. */
  private newest: DeviceEntry | undefined;
  private closed = false;

  constructor(private readonly settings: DeviceTransportsSettings) {}

  /** Number of devices with an open transport. */
  get size(): number {
    return this.devices.size;
  }

  /**
   * The entry of `serverId`, held until {@link release}: its transport is
   * not closed for idleness meanwhile.
   *
   * @throws ConnectError RESOURCE_EXHAUSTED when `maxDevices` devices have
   *   calls in flight; UNAVAILABLE once the ingress is closing.
   */
  hold(serverId: string): DeviceEntry {
    if (this.closed) throw new ConnectError("the ingress is closing", Code.Unavailable);
    let entry = this.devices.get(serverId);
    if (entry !== undefined) {
      // Most recently used goes last.
      if (entry !== this.newest) {
        this.devices.delete(serverId);
        this.devices.set(serverId, entry);
      }
    } else {
      if (this.devices.size >= this.settings.maxDevices) this.evictIdle();
      entry = new DeviceEntry(
        serverId,
        createMqttTransport({
          ...this.settings.transport,
          mqtt: this.settings.mqtt,
          serverId,
          ...(this.settings.topicPrefix !== undefined
            ? { topicPrefix: this.settings.topicPrefix }
            : {}),
        }),
      );
      this.devices.set(serverId, entry);
    }
    this.newest = entry;
    entry.holds++;
    if (entry.idleTimer !== undefined) {
      clearTimeout(entry.idleTimer);
      entry.idleTimer = undefined;
    }
    return entry;
  }

  /** Lets go of a hold; the transport closes after `idleMs` without holds. */
  release(entry: DeviceEntry): void {
    entry.holds--;
    if (entry.holds > 0 || this.devices.get(entry.serverId) !== entry) return;
    entry.idleTimer = setTimeout(() => this.drop(entry), this.settings.idleMs);
    entry.idleTimer.unref();
  }

  /** Closes every transport (their calls in flight end CANCELED). */
  async close(): Promise<void> {
    this.closed = true;
    const entries = [...this.devices.values()];
    this.devices.clear();
    this.newest = undefined;
    for (const entry of entries) if (entry.idleTimer !== undefined) clearTimeout(entry.idleTimer);
    await Promise.all(entries.map((entry) => entry.transport.close()));
  }

  /** Closes the least recently used device without calls, to make room for one more. */
  private evictIdle(): void {
    for (const entry of this.devices.values()) {
      if (entry.holds === 0) {
        this.drop(entry);
        return;
      }
    }
    throw new ConnectError(
      `the ingress has calls in flight to ${this.settings.maxDevices} devices (its maxDevices option); ` +
        "calls to another device are refused until one of them has none",
      Code.ResourceExhausted,
    );
  }

  private drop(entry: DeviceEntry): void {
    if (this.devices.get(entry.serverId) === entry) this.devices.delete(entry.serverId);
    if (this.newest === entry) this.newest = undefined;
    if (entry.idleTimer !== undefined) clearTimeout(entry.idleTimer);
    entry.idleTimer = undefined;
    void entry.transport.close();
  }
}
