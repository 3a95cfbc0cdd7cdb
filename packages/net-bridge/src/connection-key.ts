/**
 * Which `mqtt` inputs name the same broker connection, so that listeners
 * share one mqrpc server per (connection, server id) and sockets share one
 * transport: a URL by its text, MQTT.js options by their contents (keys
 * sorted, bytes as hex), an `MqttClient` (or options holding functions or
 * class instances, which cannot be compared) by identity.
 */
import type { MqttConnectionInput } from "@mqrpc/runtime";

const identities = new WeakMap<object, number>();
let nextIdentity = 1;

function identityOf(value: object): string {
  let id = identities.get(value);
  if (id === undefined) {
    id = nextIdentity++;
    identities.set(value, id);
  }
  return `#${id}`;
}

/** A string equal for `mqtt` inputs that share a connection. */
export function connectionKey(mqtt: MqttConnectionInput): string {
  if (typeof mqtt === "string") return `url ${mqtt}`;
  try {
    return `options ${JSON.stringify(canonical(mqtt))}`;
  } catch {
    return `object ${identityOf(mqtt)}`;
  }
}

function canonical(value: unknown): unknown {
  if (value === null || typeof value !== "object") {
    if (typeof value === "function" || typeof value === "symbol" || typeof value === "bigint") {
      throw new TypeError("not comparable");
    }
    return value;
  }
  if (value instanceof Uint8Array) return { bytes: Buffer.from(value).toString("hex") };
  if (Array.isArray(value)) return value.map(canonical);
  const prototype = Object.getPrototypeOf(value);
  if (prototype !== Object.prototype && prototype !== null) throw new TypeError("not comparable");
  const sorted: Record<string, unknown> = {};
  for (const name of Object.keys(value).sort()) {
    const field = (value as Record<string, unknown>)[name];
    if (field !== undefined) sorted[name] = canonical(field);
  }
  return sorted;
}
