/**
 * What the browser tests run inside Chromium: bundled for the browser
 * (test/browser/bundle.ts) as a classic script that defines `rpcPage`, and
 * called from Node with `page.evaluate`. Each function opens its own
 * transport over MQTT on WebSockets, makes its calls with the generated
 * DeviceService client, closes the transport, and returns plain data for
 * the test to check.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { createMqttTransport, type MqttTransport } from "@mqrpc/runtime";
import { createDeviceServiceClient } from "../../../packages/example-device/src/gen/mqrpc/example/device/v1/device_mqrpc.js";
import { SetLedResponseSchema } from "../../../packages/example-device/src/gen/mqrpc/example/device/v1/device_pb.js";

/** Where the device is: the broker's WebSocket URL and the device's server id. */
export interface Target {
  readonly url: string;
  readonly serverId: string;
  readonly protocolVersion: 4 | 5;
  /** An MQTT client id of the page's own (a persistent session); none: a clean session. */
  readonly clientId?: string;
}

/** How a call ended when it failed. */
export interface Failure {
  readonly code: string;
  readonly message: string;
}

/** Stream messages received so far, by the `name` the test gave the call. */
export const progress: Record<string, number> = {};

function open(target: Target): MqttTransport {
  return createMqttTransport({
    mqtt: {
      url: target.url,
      protocolVersion: target.protocolVersion,
      reconnectPeriod: 100,
      ...(target.clientId === undefined ? {} : { clientId: target.clientId }),
    },
    serverId: target.serverId,
  });
}

async function withDevice<T>(
  target: Target,
  run: (device: ReturnType<typeof createDeviceServiceClient>) => Promise<T>,
): Promise<T> {
  const transport = open(target);
  try {
    return await run(createDeviceServiceClient(transport));
  } finally {
    await transport.close();
  }
}

function failure(error: unknown): Failure {
  const e = ConnectError.from(error);
  return { code: Code[e.code], message: e.rawMessage };
}

/** What kind of page this is: no Node globals, and a secure context. */
export function environment() {
  return {
    process: typeof (globalThis as { process?: unknown }).process,
    buffer: typeof (globalThis as { Buffer?: unknown }).Buffer,
    secureContext: globalThis.isSecureContext,
    webSocket: typeof WebSocket,
  };
}

/** Unary: GetInfo, then SetLed. */
export function unary(target: Target) {
  return withDevice(target, async (device) => {
    const info = await device.getInfo({}, { timeoutMs: 5000 });
    const led = await device.setLed({ brightness: 42, color: "teal" }, { timeoutMs: 5000 });
    return {
      deviceId: info.deviceId,
      model: info.model,
      led: { brightness: led.brightness, color: led.color },
    };
  });
}

/** Server streaming: `count` telemetry samples. */
export function serverStream(target: Target, count: number) {
  return withDevice(target, async (device) => {
    const stamps: number[] = [];
    for await (const sample of device.streamTelemetry({ count }, { timeoutMs: 10_000 })) {
      stamps.push(Number(sample.timestampMs));
    }
    return {
      received: stamps.length,
      ordered: stamps.every((t, i) => i === 0 || t >= stamps[i - 1]!),
    };
  });
}

/** Deterministic bytes (xorshift32), so both sides can tell a byte out of place. */
function patterned(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  let x = 0x9e3779b9;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  return bytes;
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as BufferSource));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Client streaming: `totalBytes` uploaded as UploadFirmware messages of
 * `pieceBytes` each; pieces over the publish limit are chunked on the way.
 */
export function upload(target: Target, totalBytes: number, pieceBytes: number) {
  return withDevice(target, async (device) => {
    const image = patterned(totalBytes);
    let piecesTaken = 0;
    async function* pieces() {
      for (let offset = 0; offset < image.byteLength; offset += pieceBytes) {
        piecesTaken++;
        yield { data: image.subarray(offset, offset + pieceBytes) };
      }
    }
    let slot: string | null = null;
    const response = await device.uploadFirmware(pieces(), {
      timeoutMs: 30_000,
      onTrailer: (trailer) => {
        slot = trailer.get("x-firmware-slot");
      },
    });
    return {
      bytesReceived: Number(response.bytesReceived),
      sha256Matches: response.sha256 === (await sha256Hex(image)),
      piecesTaken,
      slot,
    };
  });
}

/** Bidi streaming: the device console, one command at a time. */
export function bidi(target: Target, lines: readonly string[]) {
  return withDevice(target, async (device) => {
    const out: string[] = [];
    async function* typed() {
      for (const line of lines) yield { line };
    }
    for await (const reply of device.console(typed(), { timeoutMs: 10_000 })) out.push(reply.line);
    return out;
  });
}

/** A refused SetLed: its code, message, detail and trailer. */
export function errorWithDetails(target: Target) {
  return withDevice(target, async (device) => {
    try {
      await device.setLed({ brightness: 150, color: "red" }, { timeoutMs: 5000 });
      return undefined;
    } catch (error) {
      const e = ConnectError.from(error);
      return {
        ...failure(e),
        details: e
          .findDetails(SetLedResponseSchema)
          .map((d) => ({ brightness: d.brightness, color: d.color })),
        maxBrightness: e.metadata.get("x-max-brightness"),
      };
    }
  });
}

/**
 * A telemetry stream that outlives `timeoutMs` (one sample, then one a
 * second): how it ended and what arrived first.
 */
export function deadline(target: Target, name: string, timeoutMs: number) {
  return withDevice(target, async (device) => {
    let received = 0;
    try {
      for await (const _ of device.streamTelemetry(
        { count: 0, intervalMs: 1000 },
        { timeoutMs, headers: { "x-test-call": name } },
      )) {
        received++;
      }
      return { received, failure: undefined };
    } catch (error) {
      return { received, failure: failure(error) };
    }
  });
}

/** A telemetry stream cancelled with an AbortController after `after` samples. */
export function cancel(target: Target, name: string, after: number) {
  return withDevice(target, async (device) => {
    const controller = new AbortController();
    let received = 0;
    try {
      for await (const _ of device.streamTelemetry(
        { count: 0, intervalMs: 20 },
        { signal: controller.signal, headers: { "x-test-call": name } },
      )) {
        received++;
        if (received === after) controller.abort();
      }
      return { received, failure: undefined };
    } catch (error) {
      return { received, failure: failure(error) };
    }
  });
}

/**
 * A telemetry stream of `count` samples (0: endless) every `intervalMs`,
 * counting into `progress[name]` so the test can break the link mid-stream.
 */
export function watchedStream(
  target: Target,
  name: string,
  request: { readonly count: number; readonly intervalMs: number; readonly timeoutMs: number },
) {
  return withDevice(target, async (device) => {
    const stamps: number[] = [];
    progress[name] = 0;
    let ended: Failure | undefined;
    try {
      for await (const sample of device.streamTelemetry(
        { count: request.count, intervalMs: request.intervalMs },
        { timeoutMs: request.timeoutMs },
      )) {
        stamps.push(Number(sample.timestampMs));
        progress[name] = stamps.length;
      }
    } catch (error) {
      ended = failure(error);
    }
    return {
      received: stamps.length,
      ordered: stamps.every((t, i) => i === 0 || t >= stamps[i - 1]!),
      failure: ended,
    };
  });
}
