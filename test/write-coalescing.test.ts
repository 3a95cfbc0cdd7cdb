/**
 * What one event-loop turn writes to the broker leaves in one socket write:
 * a server answering a quick call sends the PUBACK for the request and the
 * reply together, and a caller acknowledging a reply while it starts its
 * next call sends the PUBACK and the next request together (mqtt-link.ts
 * `holdWritesForTurn`). MQTT.js alone writes the PUBACK on the next tick,
 * in a segment of its own.
 */
import type { Socket } from "node:net";
import { createClient } from "@connectrpc/connect";
import { createMqttServer, createMqttTransport } from "@mqrpc/runtime";
import { connectAsync, type MqttClient } from "mqtt";
import { afterEach, expect, it } from "vitest";
import { forEachBroker } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "./support/interop-service.js";
import { Closer, mqttOptions, uniqueServerId } from "./support/rpc-fixture.js";

/** MQTT control packet types by the high nibble of a packet's first byte. */
const PUBLISH = 3;
const PUBACK = 4;

type Chunk = Buffer | string;
type Callback = (e?: Error | null) => void;

/** MQTT.js writes topics as strings. */
function toBuffer(chunk: Chunk, encoding: BufferEncoding): Buffer {
  return typeof chunk === "string" ? Buffer.from(chunk, encoding) : chunk;
}

/** Each socket write of `client`'s connection, as the MQTT packet types it carries. */
function recordWrites(client: MqttClient): number[][] {
  const writes: number[][] = [];
  const socket = client.stream as unknown as Socket & {
    _writev(chunks: Array<{ chunk: Chunk; encoding: BufferEncoding }>, cb: Callback): void;
    _write(chunk: Chunk, encoding: BufferEncoding, cb: Callback): void;
  };
  const writev = socket._writev.bind(socket);
  const write = socket._write.bind(socket);
  socket._writev = (chunks, cb) => {
    writes.push(packetTypes(Buffer.concat(chunks.map((c) => toBuffer(c.chunk, c.encoding)))));
    writev(chunks, cb);
  };
  socket._write = (chunk, encoding, cb) => {
    writes.push(packetTypes(toBuffer(chunk, encoding)));
    write(chunk, encoding, cb);
  };
  return writes;
}

/** The types of the whole MQTT packets in `bytes`, in order. */
function packetTypes(bytes: Buffer): number[] {
  const types: number[] = [];
  let at = 0;
  while (at < bytes.length) {
    const type = (bytes[at] as number) >> 4;
    let length = 0;
    let shift = 0;
    let i = at + 1;
    for (;;) {
      const b = bytes[i++] as number;
      length += (b & 0x7f) << shift;
      shift += 7;
      if ((b & 0x80) === 0) break;
    }
    types.push(type);
    at = i + length;
  }
  return types;
}

forEachBroker((target) => {
  const closer = new Closer();
  afterEach(() => closer.closeAll());

  it("carry a request's PUBACK and its reply in one socket write, and a reply's PUBACK with the next request", async () => {
    const serverId = uniqueServerId("coalescing");
    const clientId = serverId.replace(/\W/g, "-");
    const serverClient = closer.add(
      await connectAsync(mqttOptions(target, `${clientId}-server`)),
      (c) => c.endAsync(),
    );
    const server = closer.add(
      await createMqttServer({
        mqtt: serverClient,
        serverId,
        // A shared client has no last will; the warning saying so is not this test's.
        logger: { warn: () => {} },
      }),
      (s) => s.close(),
    );
    server.service(TestService, interopService);
    const callerClient = closer.add(
      await connectAsync(mqttOptions(target, `${clientId}-caller`)),
      (c) => c.endAsync(),
    );
    const transport = closer.add(createMqttTransport({ mqtt: callerClient, serverId }), (t) =>
      t.close(),
    );
    const client = createClient(TestService, transport);
    await client.emptyCall({});

    const serverWrites = recordWrites(serverClient);
    const callerWrites = recordWrites(callerClient);
    for (let i = 0; i < 5; i++) await client.emptyCall({});

    // The server: every reply shares its write with its request's PUBACK.
    const replies = serverWrites.filter((w) => w.includes(PUBLISH));
    expect(replies).toHaveLength(5);
    for (const write of replies) expect(write.toSorted()).toEqual([PUBLISH, PUBACK]);
    // The caller: each reply's PUBACK leaves with the request that follows it.
    const requests = callerWrites.filter((w) => w.includes(PUBLISH));
    expect(requests).toHaveLength(5);
    for (const write of requests.slice(1)) expect(write.toSorted()).toEqual([PUBLISH, PUBACK]);
  });
});
