/**
 * `exposePort` in front of a plain TCP echo server: a 100 MiB round trip
 * arrives byte-exact while the reader is slow, and flow control keeps what
 * is buffered bounded: the writer is held back (bytes written but not yet
 * read back stay under a bound far below the transfer), and the process's
 * memory does not grow with the transfer. One broker (Mosquitto 5 when
 * installed, so the broker's memory is not this process's; else the
 * embedded one).
 */
import { createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerTargets } from "../../../test/brokers/targets.js";
import { collectGarbage } from "../../../test/support/gc.js";
import { Closer, mqttOptions, uniqueServerId } from "../../../test/support/rpc-fixture.js";
import { type ExposedPort, exposePort } from "../src/index.js";
import {
  closed,
  connectTo,
  nextError,
  verifyStream,
  writeStream,
} from "./support/bridge-fixture.js";

const MiB = 1024 * 1024;
const SIZE = 100 * MiB;
/**
 * Bytes written and not yet read back, at most: each direction's call
 * keeps at most a window of 64 frames of up to 128 KiB at its sender and
 * as many at its receiver (4 × 8 MiB), plus socket buffers. Measured: 16
 * MiB in flight, 34 MiB of live memory.
 */
const MAX_IN_FLIGHT = 48 * MiB;
/** Live memory the transfer may add to this process (see MAX_IN_FLIGHT). */
const MAX_LIVE_GROWTH = 64 * MiB;

const targets = brokerTargets();
const target =
  targets.find((t) => t.name === "mosquitto-5") ?? targets.find((t) => t.kind === "aedes");

describe.runIf(target !== undefined)(`exposePort to a TCP echo server, on ${target?.name}`, () => {
  const closer = new Closer();
  let echo: Server;
  let exposed: ExposedPort;
  const echoed: Socket[] = [];

  beforeAll(async () => {
    if (target === undefined) return;
    echo = createServer({ allowHalfOpen: true }, (socket) => {
      echoed.push(socket);
      socket.pipe(socket);
      socket.on("error", () => {});
    });
    await new Promise<void>((resolve) => echo.listen(0, "127.0.0.1", resolve));
    closer.add(echo, (s) => new Promise((resolve) => s.close(resolve)));
    const address = echo.address();
    exposed = closer.add(
      await exposePort({
        mqtt: mqttOptions(target),
        serverId: uniqueServerId("echo"),
        port: 7,
        target: { port: typeof address === "object" && address !== null ? address.port : 0 },
      }),
      (e) => e.close(),
    );
  });
  afterAll(() => closer.closeAll());

  it("round-trips 100 MiB byte-exact to a slow reader, with bounded buffering and memory", async () => {
    if (target === undefined) return;
    const socket = connectTo(closer, target, exposed.listener, { allowHalfOpen: true });
    let written = 0;
    let read = 0;
    let maxInFlight = 0;
    const originalWrite = socket.write.bind(socket);
    socket.write = ((chunk: Buffer, ...rest: never[]) => {
      written += chunk.length;
      maxInFlight = Math.max(maxInFlight, written - read);
      return originalWrite(chunk, ...rest);
    }) as typeof socket.write;
    const baseline = liveMemory();
    let peak = baseline;
    const sampler = setInterval(() => {
      peak = Math.max(peak, liveMemory());
    }, 1000);
    try {
      const writing = writeStream(socket, SIZE, { chunk: 256 * KiB });
      // The slow reader: a pause of 40 ms after every MiB (about 25 MiB/s
      // at most, below what the writer can do), so the writer runs into
      // the bridge's flow control for most of the transfer.
      let nextPause = MiB;
      const verified = verifyStream(socket, {
        onChunk: (n) => {
          read = n;
          if (n < nextPause) return undefined;
          nextPause += MiB;
          return new Promise((resolve) => setTimeout(resolve, 40));
        },
      });
      await writing;
      expect(await verified).toBe(SIZE);
    } finally {
      clearInterval(sampler);
    }
    await closed(socket);
    expect(socket.errored).toBeNull();
    expect(maxInFlight).toBeGreaterThan(4 * MiB); // the reader really was behind
    expect(maxInFlight).toBeLessThan(MAX_IN_FLIGHT);
    // What this process holds for the transfer (both ends of the bridge,
    // the echo server's socket, MQTT.js buffers), sampled after full
    // collections, stays far below the bytes moved.
    expect(peak - baseline).toBeLessThan(MAX_LIVE_GROWTH);
  }, 80_000);

  it("forwards to its target only, and refuses when the target does", async () => {
    if (target === undefined) return;
    const before = echoed.length;
    const socket = connectTo(closer, target, exposed.listener);
    socket.end("ping");
    const chunks: Buffer[] = [];
    for await (const chunk of socket) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe("ping");
    expect(echoed.length).toBe(before + 1);
    // Another virtual port of the same server id is not served.
    const other = connectTo(closer, target, { serverId: exposed.listener.serverId, port: 8 });
    expect((await nextError(other)).code).toBe("ECONNREFUSED");
    // A target that refuses: the caller gets ECONNREFUSED, never a connection elsewhere.
    const refusing = createServer();
    await new Promise<void>((resolve) => refusing.listen(0, "127.0.0.1", resolve));
    const port = (refusing.address() as { port: number }).port;
    await new Promise((resolve) => refusing.close(resolve));
    const dead = closer.add(
      await exposePort({
        mqtt: mqttOptions(target),
        serverId: uniqueServerId("dead"),
        port: 7,
        target: { port },
      }),
      (e) => e.close(),
    );
    const refused = connectTo(closer, target, dead.listener);
    const error = await nextError(refused);
    expect(error.code).toBe("ECONNREFUSED");
    expect(String(error.message)).toContain(`127.0.0.1:${port}`);
    expect(echoed.length).toBe(before + 1);
    await closed(refused);
  });
});

const KiB = 1024;

/** Heap and buffers of this process that are still reachable. */
function liveMemory(): number {
  collectGarbage();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}
