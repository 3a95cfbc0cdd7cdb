/**
 * The fixture of the generated-settings tests (settings.test.ts,
 * settings-registration.test.ts): handlers for the services of
 * proto/mqrpc/test/v1/settings.proto, a server and a transport with a known
 * client id, and a count of the publishes a call makes.
 */
import type { MqttServer, MqttServerOptions, MqttTransport } from "@mqrpc/runtime";
import { connectAsync } from "mqtt";
import { expect } from "vitest";
import { decodeFrame } from "../../packages/runtime/src/wire/frame-codec.js";
import type { BrokerTarget } from "../brokers/targets.js";
import {
  type Closer,
  mqttOptions,
  startServer,
  startTransport,
  uniqueServerId,
} from "./rpc-fixture.js";

/** Ticks numbered 0..count-1: a stream's requests or responses. */
export async function* ticks(count: number) {
  for (let n = 0; n < count; n++) yield { n };
}

/** FileLevelService's handlers: `ticks` streams `count` ticks. */
export const fileLevelHandlers = {
  async *ticks(req: { count: number }) {
    yield* ticks(req.count);
  },
};

/** ServiceLevelService's handlers: `ticks` and `batchedTicks` stream `count` ticks, `upload` counts them. */
export const serviceLevelHandlers = {
  ...fileLevelHandlers,
  async *batchedTicks(req: { count: number }) {
    yield* ticks(req.count);
  },
  async upload(requests: AsyncIterable<{ n: number }>) {
    let count = 0;
    for await (const _ of requests) count++;
    return { count };
  },
};

/** What {@link startSettingsPair} started. */
export interface SettingsPair {
  readonly serverId: string;
  /** The transport's MQTT client id. */
  readonly clientId: string;
  readonly transport: MqttTransport;
  /**
   * Publishes on `topicFilter` while `run` runs, through the call's last
   * frame (`last`), as an MQTT client of its own sees them.
   */
  countPublishes(
    topicFilter: string,
    last: "end" | "halfClose",
    run: () => Promise<void>,
  ): Promise<number>;
}

/**
 * A server on `target` (with `options`) whose services `register` adds, and
 * a transport to it whose MQTT client id is `clientId`; both closed by
 * `closer`. `label` starts the server id and the client id.
 */
export async function startSettingsPair(
  closer: Closer,
  target: BrokerTarget,
  label: string,
  register: (server: MqttServer) => void,
  options: Partial<MqttServerOptions> = {},
): Promise<SettingsPair> {
  const serverId = uniqueServerId(label);
  register(await startServer(closer, target, { ...options, serverId }));
  const clientId = `${label}-${Math.random().toString(36).slice(2, 10)}`;
  const transport = startTransport(closer, target, {
    serverId,
    mqtt: mqttOptions(target, clientId),
  });
  return {
    serverId,
    clientId,
    transport,
    countPublishes: (topicFilter, last, run) =>
      countPublishes(closer, target, topicFilter, last, run),
  };
}

/**
 * Counts the publishes on `topicFilter` while `run` runs, up to and
 * including the call's last frame (`last`), which the observer (an MQTT
 * client of its own on `target`, closed by `closer` too) may see after
 * `run` returned.
 */
async function countPublishes(
  closer: Closer,
  target: BrokerTarget,
  topicFilter: string,
  last: "end" | "halfClose",
  run: () => Promise<void>,
): Promise<number> {
  const observer = closer.add(await connectAsync(target.url, target.mqttOptions), (c) =>
    c.endAsync(),
  );
  let count = 0;
  let sawLast = false;
  observer.on("message", (_topic, payload) => {
    count++;
    if (decodeFrame(payload).kind.case === last) sawLast = true;
  });
  await observer.subscribeAsync(topicFilter, { qos: 1 });
  await run();
  await expect.poll(() => sawLast).toBe(true);
  await observer.endAsync();
  return count;
}
