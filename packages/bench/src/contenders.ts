/**
 * The client sides of the unary contenders, each starting its server side
 * in a peer process (peer.ts): the raw MQTT.js ping-pong floor, mqrpc,
 * @grpc/grpc-js and Connect-node over HTTP/2 loopback, and mqtt-json-rpc.
 * Every one calls the same 32-byte echo (echo-service.ts).
 */
import * as http2 from "node:http2";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createMqttTransport } from "@mqrpc/runtime";
import { connectAsync, type MqttClient } from "mqtt";
import MqttJsonRpc from "mqtt-json-rpc";
import { SimpleRequestSchema, TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { ECHO_BYTES, INTEROP_PROTO, PROTO_ROOT } from "./echo-service.js";
import type { Call, Pair } from "./measure.js";
import { startPeer } from "./peers.js";

/**
 * The raw MQTT.js floor: QoS 1 ping-pong with an echo client (peer.ts
 * `raw-echo`). Also gives its client and echo peer to the 16 MiB rows.
 */
export async function rawPair(url: string) {
  const echo = await startPeer("raw-echo", { url });
  const client = await connectAsync(url);
  (client.stream as unknown as { setNoDelay(b: boolean): void }).setNoDelay(true);
  const topic = "raw/echo/a";
  await client.subscribeAsync(`${topic}/reply`, { qos: 1 });
  let nextId = 0;
  const waiting = new Map<number, () => void>();
  client.on("message", (_t, payload) => {
    const id = payload.readUInt32LE(0);
    waiting.get(id)?.();
    waiting.delete(id);
  });
  const body = Buffer.alloc(ECHO_BYTES);
  const call: Call = () =>
    new Promise<void>((resolve) => {
      const id = nextId++ >>> 0;
      const payload = Buffer.from(body);
      payload.writeUInt32LE(id, 0);
      waiting.set(id, resolve);
      client.publish(topic, payload, { qos: 1 });
    });
  return {
    call,
    client,
    echo,
    processes: [{ role: "raw-echo", pid: echo.pid }],
    close: async () => {
      await client.endAsync();
      await echo.stop();
    },
  };
}

/** An mqrpc client calling the TestService of server id `serverId` on the broker at `url`. */
export function mqrpcCaller(url: string, serverId: string) {
  const transport = createMqttTransport({
    mqtt: url,
    serverId,
    maxMessageBytes: 64 << 20,
  });
  const client = createClient(TestService, transport);
  const body = new Uint8Array(ECHO_BYTES);
  const call: Call = () => client.unaryCall({ payload: { body } });
  return { call, client, close: () => transport.close() };
}

/** Native mqrpc: an mqrpc client → an mqrpc server (peer.ts `mqrpc-server`, server id "bench"). */
export async function mqrpcPair(url: string, batched = false) {
  const server = await startPeer("mqrpc-server", { url, batched });
  const caller = mqrpcCaller(url, "bench");
  return {
    call: caller.call,
    client: caller.client,
    server,
    processes: [{ role: "mqrpc-server", pid: server.pid }],
    close: async () => {
      await caller.close();
      await server.stop();
    },
  };
}

/**
 * A grpc-js TestService client (@grpc/proto-loader, as grpc-js documents)
 * calling `address` (`host:port`), with `metadata` on every call when given.
 */
export function grpcJsCaller(address: string, metadata?: Readonly<Record<string, string>>) {
  const definition = protoLoader.loadSync(INTEROP_PROTO, { includeDirs: [PROTO_ROOT] });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    mqrpc: { interop: { v1: { TestService: grpc.ServiceClientConstructor } } };
  };
  type Callback = (e: Error | null, res: unknown) => void;
  const client = new pkg.mqrpc.interop.v1.TestService(
    address,
    grpc.credentials.createInsecure(),
  ) as unknown as grpc.Client & {
    unaryCall(req: unknown, cb: Callback): void;
    unaryCall(req: unknown, md: grpc.Metadata, cb: Callback): void;
  };
  const body = Buffer.alloc(ECHO_BYTES);
  let call: Call;
  if (metadata === undefined) {
    call = () =>
      new Promise((resolve, reject) =>
        client.unaryCall({ payload: { body } }, (e, res) => (e ? reject(e) : resolve(res))),
      );
  } else {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(metadata)) md.set(k, v);
    call = () =>
      new Promise((resolve, reject) =>
        client.unaryCall({ payload: { body } }, md, (e, res) => (e ? reject(e) : resolve(res))),
      );
  }
  return { call, close: () => client.close() };
}

/** @grpc/grpc-js client → grpc-js server (peer.ts `grpc-server`) over HTTP/2 loopback. */
export async function grpcPair(): Promise<Pair> {
  const server = await startPeer("grpc-server");
  const caller = grpcJsCaller(`127.0.0.1:${server.info.port as number}`);
  return {
    call: caller.call,
    processes: [{ role: "grpc-server", pid: server.pid }],
    close: async () => {
      caller.close();
      await server.stop();
    },
  };
}

/**
 * The upstream hop of the gateway rows alone, for reference: a bare
 * `node:http2` client (what the gateway's upstream calls are built on, no
 * gRPC library) sending the same enveloped request to the grpc-js server
 * and reading its response to the trailers. (b) is at least native mqrpc
 * plus this hop, whatever the gateway does.
 */
export async function http2HopPair(): Promise<Pair> {
  const server = await startPeer("grpc-server");
  const session = http2.connect(`http://127.0.0.1:${server.info.port as number}`);
  await new Promise<void>((resolve, reject) => {
    session.once("connect", () => resolve());
    session.once("error", reject);
  });
  const message = toBinary(
    SimpleRequestSchema,
    create(SimpleRequestSchema, { payload: { body: new Uint8Array(ECHO_BYTES) } }),
  );
  const envelope = Buffer.alloc(5 + message.byteLength);
  envelope.writeUInt32BE(message.byteLength, 1);
  envelope.set(message, 5);
  const call: Call = () =>
    new Promise<void>((resolve, reject) => {
      const stream = session.request({
        ":method": "POST",
        ":path": "/mqrpc.interop.v1.TestService/UnaryCall",
        "content-type": "application/grpc",
        te: "trailers",
      });
      let bytes = 0;
      let status: unknown;
      stream.on("data", (chunk: Buffer) => {
        bytes += chunk.byteLength;
      });
      stream.once("trailers", (trailers) => {
        status = trailers["grpc-status"];
      });
      stream.once("error", reject);
      stream.once("close", () =>
        status === "0" && bytes > 0
          ? resolve()
          : reject(new Error(`hop: grpc-status ${String(status)}, ${bytes} bytes`)),
      );
      stream.end(envelope);
    });
  return {
    call,
    processes: [{ role: "grpc-server", pid: server.pid }],
    close: async () => {
      session.close();
      await server.stop();
    },
  };
}

/**
 * Connect-node gRPC client (`createGrpcTransport`) → Connect-node server
 * (peer.ts `connect-server`, `connectNodeAdapter` on `http2.createServer`)
 * over HTTP/2 loopback.
 */
export async function connectPair(): Promise<Pair> {
  const server = await startPeer("connect-server");
  const baseUrl = `http://127.0.0.1:${server.info.port as number}`;
  const sessions = new Http2SessionManager(baseUrl);
  const client = createClient(
    TestService,
    createGrpcTransport({ baseUrl, sessionManager: sessions }),
  );
  const body = new Uint8Array(ECHO_BYTES);
  return {
    call: () => client.unaryCall({ payload: { body } }),
    processes: [{ role: "connect-server", pid: server.pid }],
    close: async () => {
      sessions.abort();
      await server.stop();
    },
  };
}

/** mqtt-json-rpc as its README shows (QoS 2 requests), against peer.ts `jsonrpc-server`. */
export async function jsonRpcPair(url: string): Promise<Pair> {
  const server = await startPeer("jsonrpc-server", { url });
  const mqtt: MqttClient = await connectAsync(url);
  const rpc = new MqttJsonRpc(mqtt);
  const body = "x".repeat(ECHO_BYTES);
  // Calls that time out (its default is 10 s) count as failures of the run.
  const call: Call = () => rpc.call("bench/echo", body);
  return {
    call,
    processes: [{ role: "jsonrpc-server", pid: server.pid }],
    close: async () => {
      await mqtt.endAsync();
      await server.stop();
    },
  };
}
