/**
 * Watches a server id's retained presence announcements with a plain MQTT
 * client, so a test can wait until the broker has published a server's
 * last will (or its OFFLINE) before it acts: the event, not a sleep.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { TopicScheme } from "@mqrpc/runtime";
import { Presence_State, PresenceSchema } from "@mqrpc/runtime/proto";
import { connectAsync, type IClientOptions, type MqttClient } from "mqtt";

export { Presence_State };

export class PresenceObserver {
  /** Latest state per instance id. */
  readonly states = new Map<string, Presence_State>();
  private readonly waiters = new Set<() => void>();

  private constructor(private readonly client: MqttClient) {}

  static async start(
    url: string,
    serverId: string,
    options: IClientOptions = {},
  ): Promise<PresenceObserver> {
    const client = await connectAsync(url, { ...options, reconnectPeriod: 200 });
    const observer = new PresenceObserver(client);
    const scheme = new TopicScheme();
    client.on("message", (topic, payload) => {
      const instance = scheme.parsePresenceTopic(serverId, topic);
      if (instance === undefined) return;
      if (payload.byteLength === 0) observer.states.delete(instance);
      else {
        try {
          observer.states.set(instance, fromBinary(PresenceSchema, payload).state);
        } catch {
          return;
        }
      }
      for (const w of [...observer.waiters]) w();
    });
    await client.subscribeAsync(scheme.presenceFilter(serverId), { qos: 1 });
    return observer;
  }

  /** Resolves once `predicate` holds for the announcements seen (at once if it does now). */
  until(predicate: (states: ReadonlyMap<string, Presence_State>) => boolean): Promise<void> {
    if (predicate(this.states)) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (!predicate(this.states)) return;
        this.waiters.delete(check);
        resolve();
      };
      this.waiters.add(check);
    });
  }

  /** Resolves once `instance` announced `state`. */
  untilState(instance: string, state: Presence_State): Promise<void> {
    return this.until((s) => s.get(instance) === state);
  }

  close(): Promise<void> {
    return this.client.endAsync(true);
  }
}
