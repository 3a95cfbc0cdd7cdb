/**
 * What the net-bridge tests share: a listener and caller on one broker
 * target with connections of their own (different MQTT client ids, as a
 * device and a cloud caller have), and small awaits over socket events.
 */
import { once } from "node:events";
import type { Duplex, Readable, Writable } from "node:stream";
import type { BrokerTarget } from "../../../../test/brokers/targets.js";
import { type Closer, mqttOptions, uniqueServerId } from "../../../../test/support/rpc-fixture.js";
import {
  type ConnectMqttOptions,
  connectMqtt,
  type ListenMqttOptions,
  listenMqtt,
  type MqttListener,
  type MqttSocket,
} from "../../src/index.js";

export { uniqueServerId };

let callers = 0;

/** MQTT options of a caller with a client id of its own (its client key). */
export function callerMqtt(target: BrokerTarget, label = "caller") {
  callers++;
  return mqttOptions(target, `${label}-${process.pid}-${callers}`);
}

/** Listens on `port` of a new server id (the device's own connection); closed in teardown. */
export async function startListener(
  closer: Closer,
  target: BrokerTarget,
  options: Partial<ListenMqttOptions> & { port: number },
): Promise<MqttListener> {
  const listener = await listenMqtt({
    mqtt: mqttOptions(target),
    serverId: options.serverId ?? uniqueServerId("nb"),
    ...options,
  });
  return closer.add(listener, (l) => l.close());
}

/** Connects to `listener` from a caller connection of its own; destroyed in teardown. */
export function connectTo(
  closer: Closer,
  target: BrokerTarget,
  listener: { serverId: string; port: number },
  options: Partial<ConnectMqttOptions> = {},
): MqttSocket {
  const socket = connectMqtt({
    mqtt: callerMqtt(target),
    serverId: listener.serverId,
    port: listener.port,
    ...options,
  });
  return closer.add(socket, (s) => {
    s.destroy();
  });
}

/** The next socket a listener accepts. */
export async function nextConnection(listener: MqttListener): Promise<MqttSocket> {
  const [socket] = (await once(listener, "connection")) as [MqttSocket];
  return socket;
}

/** Everything a socket reads until its end; rejects with its error. */
export function readAll(socket: Readable): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on("data", (d: Buffer) => chunks.push(d));
    socket.once("end", () => resolve(Buffer.concat(chunks)));
    socket.once("error", reject);
  });
}

/** The error a socket is destroyed with (resolves, so tests can inspect it). */
export function nextError(socket: Duplex): Promise<Error & { code?: string; cause?: unknown }> {
  return new Promise((resolve) => socket.once("error", resolve));
}

/** Resolves once the socket emitted 'close'. */
export function closed(socket: Duplex): Promise<void> {
  if (socket.closed) return Promise.resolve();
  return new Promise((resolve) => socket.once("close", () => resolve()));
}

/**
 * Bytes `offset` to `offset + n` of an endless test stream in which every
 * 4-byte word is its own index (little-endian uint32), so a piece that is
 * dropped, duplicated or reordered anywhere in the first 16 GiB changes
 * the bytes that follow it.
 */
export function streamBytes(offset: number, n: number): Buffer {
  const skew = offset % 4;
  const first = (offset - skew) / 4;
  const words = Math.ceil((n + skew) / 4);
  const out = Buffer.allocUnsafe(words * 4);
  for (let w = 0; w < words; w++) out.writeUInt32LE((first + w) >>> 0, w * 4);
  return out.subarray(skew, skew + n);
}

/**
 * Writes `total` bytes of the {@link streamBytes} stream in `chunk`-sized
 * writes, respecting backpressure, then ends (unless `end` is false).
 * Rejects on a socket error.
 */
export async function writeStream(
  socket: Writable,
  total: number,
  options: { chunk?: number; end?: boolean } = {},
): Promise<void> {
  const chunk = options.chunk ?? 256 * 1024;
  let written = 0;
  while (written < total) {
    const n = Math.min(chunk, total - written);
    const data = streamBytes(written, n);
    written += n;
    if (!socket.write(data)) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => {
          socket.off("error", onError);
          socket.off("close", onClose);
          resolve();
        };
        const onError = (e: Error) => {
          socket.off("drain", onDrain);
          reject(e);
        };
        const onClose = () => {
          socket.off("drain", onDrain);
          reject(new Error(`socket closed after ${written} of ${total} bytes were written`));
        };
        socket.once("drain", onDrain);
        socket.once("error", onError);
        socket.once("close", onClose);
      });
    }
  }
  if (options.end !== false) socket.end();
}

/**
 * Reads a {@link streamBytes} stream to its end without keeping it:
 * resolves with the byte count, rejects at the first differing byte (with
 * its offset) or on a socket error. `onChunk` may return a promise to slow
 * the reader (the socket pauses until it settles).
 */
export function verifyStream(
  socket: Readable,
  options: { onChunk?: (read: number) => Promise<void> | undefined } = {},
): Promise<number> {
  return new Promise((resolve, reject) => {
    let offset = 0;
    let failed = false;
    const fail = (e: unknown) => {
      if (failed) return;
      failed = true;
      reject(e);
    };
    socket.on("data", (d: Buffer) => {
      if (failed) return;
      const want = streamBytes(offset, d.length);
      if (!want.equals(d)) {
        let at = 0;
        while (at < d.length && d[at] === want[at]) at++;
        fail(new Error(`byte ${offset + at} of the stream differs`));
        return;
      }
      offset += d.length;
      const waiting = options.onChunk?.(offset);
      if (waiting !== undefined) {
        socket.pause();
        waiting.then(() => socket.resume(), fail);
      }
    });
    socket.once("end", () => {
      if (!failed) resolve(offset);
    });
    socket.once("error", fail);
  });
}
