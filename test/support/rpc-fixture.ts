/**
 * Starts a server and a transport on one broker target and closes both in
 * teardown, so every integration test reads as: fixture, calls, assertions.
 */
import {
  createMqttServer,
  createMqttTransport,
  type MqttServer,
  type MqttServerOptions,
  type MqttTransport,
  type MqttTransportOptions,
} from "@mqrpc/runtime";
import type { BrokerTarget } from "../brokers/targets.js";

let serial = 0;

/** A server id no other test uses, with a dot to exercise topic encoding. */
export function uniqueServerId(label: string): string {
  serial++;
  return `${label}.${process.pid}-${serial}-${Math.random().toString(36).slice(2, 8)}`;
}

/** MQTT connection options for a target, with a recognisable client id. */
export function mqttOptions(target: BrokerTarget, clientId?: string) {
  return {
    url: target.url,
    ...target.mqttOptions,
    ...(clientId !== undefined ? { clientId } : {}),
    reconnectPeriod: 200,
  };
}

/** Things to close after a test, in reverse order of creation. */
export class Closer {
  private readonly closers: Array<() => Promise<unknown> | unknown> = [];

  add<T>(thing: T, close: (thing: T) => Promise<unknown> | unknown): T {
    this.closers.push(() => close(thing));
    return thing;
  }

  async closeAll(): Promise<void> {
    const errors: unknown[] = [];
    while (this.closers.length > 0) {
      try {
        await this.closers.pop()?.();
      } catch (e) {
        errors.push(e);
      }
    }
    if (errors.length > 0) throw errors[0];
  }
}

/** Starts a server on `target`, registered for cleanup in `closer`. */
export async function startServer(
  closer: Closer,
  target: BrokerTarget,
  options: Partial<MqttServerOptions> & { serverId: string },
): Promise<MqttServer> {
  const server = await createMqttServer({ mqtt: mqttOptions(target), ...options });
  return closer.add(server, (s) => s.close());
}

/** Creates a transport on `target`, registered for cleanup in `closer`. */
export function startTransport(
  closer: Closer,
  target: BrokerTarget,
  options: Partial<MqttTransportOptions> & { serverId: string },
): MqttTransport {
  const transport = createMqttTransport({ mqtt: mqttOptions(target), ...options });
  return closer.add(transport, (t) => t.close());
}

/** A promise with its resolve function, for awaiting events from handlers. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/**
 * What a handler that never finishes by itself awaits: rejects with the
 * reason when the handler's signal fires, after handing the reason to
 * `aborted` so the test can check how the call ended on the server.
 */
export function untilAborted(
  signal: AbortSignal,
  aborted?: { resolve: (reason: unknown) => void },
): Promise<never> {
  return new Promise((_resolve, reject) => {
    signal.addEventListener("abort", () => {
      aborted?.resolve(signal.reason);
      reject(signal.reason);
    });
  });
}
