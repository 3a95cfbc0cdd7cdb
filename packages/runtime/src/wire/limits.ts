/**
 * Size limits shared by transports and servers, with the reasons for their
 * defaults (docs/PROTOCOL.md, "Chunking").
 */

/**
 * Largest MQTT packet mqrpc publishes by default: 128 KiB. AWS IoT Core caps
 * payloads at 128 KB, Azure IoT Hub at 256 KB and NATS at 1 MB, and HiveMQ
 * Cloud and EMQX defaults are larger still; 128 KiB fits all of them, keeps a
 * single publish from occupying a slow link for long, and bounds what a
 * broker queues per message. Larger messages are chunked. On MQTT 5 the
 * broker's CONNACK maximum packet size lowers it further.
 */
export const DEFAULT_MAX_PUBLISH_BYTES = 128 * 1024;

/** Largest message a receiver reassembles by default, as gRPC: 4 MiB. */
export const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

/** Smallest publish size that leaves room for a frame around some data. */
export const MIN_PUBLISH_BYTES = 512;

/** The longest delay a Node or browser timer takes: longer ones (2^31 ms and up) wrap to 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Validates a positive integer option, naming it in the error. */
export function positiveInteger(
  name: string,
  value: number | undefined,
  fallback: number,
  min = 1,
): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min) {
    throw new Error(
      `${name} must be an integer of at least ${min}, got ${typeof value === "string" ? `${JSON.stringify(value)} (a string)` : String(value)}`,
    );
  }
  return value;
}

/**
 * Default cap on the bytes all partly received messages of one server or
 * transport hold together: 64 MiB, and never less than two whole messages.
 */
export function defaultReassemblyBytes(maxMessageBytes: number): number {
  return Math.max(64 * 1024 * 1024, 2 * maxMessageBytes);
}
