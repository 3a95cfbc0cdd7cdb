/**
 * The net-bridge rows of `npm run bench`, on one broker, side by side:
 *
 * - bulk: 64 MiB written to a bridged socket (`connectMqtt` → `listenMqtt`)
 *   until the device side has read it all, next to the raw MQTT.js publish
 *   rate of the same bytes (QoS 1 publishes of the bridge's message size,
 *   all at once, until the subscriber has them all; target: bridge ≥ 0.7 ×
 *   raw) and to direct loopback TCP (reported);
 * - gRPC unary p50: a grpc-js server behind `listenMqtt` called by a
 *   Connect-node gRPC client through `connectMqtt`, next to a native mqrpc
 *   unary call of the same method and message (the ratio is reported; the
 *   message-level path is expected to win).
 *
 * Layout as in main.ts: the broker and the device side run in child
 * processes (this file forked with a role), the measuring client here.
 * Medians of ROUNDS rounds after a warm-up.
 *
 * `npx tsx packages/bench/src/net-bridge.ts [--brokers=aedes,mosquitto]`
 * runs it alone and prints the rows; main.ts can call
 * {@link netBridgeScenarios} per broker and {@link renderNetBridge} once.
 */
import { type ChildProcess, fork } from "node:child_process";
import { once } from "node:events";
import { createServer, type Socket, connect as tcpConnect } from "node:net";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { connectMqtt, listenMqtt } from "@mqrpc/net-bridge";
import { createMqttServer, createMqttTransport, startEmbeddedBroker } from "@mqrpc/runtime";
import { connectAsync } from "mqtt";
import { mosquittoAvailable, startMosquitto } from "../../../test/brokers/mosquitto.js";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { grpcDefinition } from "../../net-bridge/test/support/grpc-js-test-service.js";

const MiB = 1024 * 1024;
/** Bytes of one bulk transfer. */
export const BULK_BYTES = 64 * MiB;
/** Bytes per raw MQTT.js publish: what one bridge message carries at the default 128 KiB publish size. */
const RAW_PUBLISH_BYTES = 128 * 1024 - 2048;
/** Bytes per write to the bridged socket and the TCP socket. */
const WRITE_BYTES = 64 * 1024;
const ROUNDS = 3;
const LATENCY_CALLS = 800;
const DEVICE = "bench-bridge";
const BULK_PORT = 9;
const GRPC_PORT = 50051;
const RAW_TOPIC = "bench/raw/bulk";

/** The rows of one broker. */
export interface NetBridgeResult {
  broker: string;
  /** MiB/s of a 64 MiB transfer. */
  bulk: { bridge: number; rawMqtt: number; tcp: number };
  /** Unary p50 in ms. */
  unary: { bridgeGrpc: number; nativeMqrpc: number };
}

// ---- device side (child processes) ------------------------------------------

type Role = "aedes" | "device";

async function runRole(role: Role, url: string | undefined): Promise<void> {
  const send = (m: unknown) => process.send?.(m);
  process.on("disconnect", () => process.exit(1));
  let stop: () => Promise<void> = async () => {};
  process.on("message", (m) => {
    if (m === "stop") void stop().then(() => process.exit(0));
  });
  if (role === "aedes") {
    const broker = await startEmbeddedBroker();
    stop = () => broker.close();
    send({ ready: true, url: broker.url });
    return;
  }
  const mqtt = { url: url as string, clientId: "bench-bridge-device" };
  // Bulk sink: counts, answers with the count at the caller's end.
  const bulk = await listenMqtt({ mqtt, serverId: DEVICE, port: BULK_PORT });
  bulk.on("connection", (socket) => {
    let n = 0;
    socket.on("data", (d: Buffer) => {
      n += d.length;
    });
    socket.on("end", () => socket.end(`done ${n}`));
    socket.on("error", () => {});
  });
  // gRPC: an ordinary grpc-js server fed the bridge's sockets.
  const server = new grpc.Server();
  server.addService(grpcDefinition(TestService), {
    unaryCall(
      call: grpc.ServerUnaryCall<{ payload?: { body: Uint8Array } }, unknown>,
      callback: grpc.sendUnaryData<unknown>,
    ) {
      callback(null, { payload: { body: call.request.payload?.body ?? new Uint8Array(0) } });
    },
  });
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const grpcPort = await listenMqtt({ mqtt, serverId: DEVICE, port: GRPC_PORT });
  grpcPort.on("connection", (socket) => injector.injectConnection(socket));
  // Native mqrpc, the same method and messages.
  const native = await createMqttServer({
    mqtt: { url: url as string, clientId: "bench-bridge-native" },
    serverId: `${DEVICE}-native`,
    routes: (s) =>
      s.service(TestService, {
        unaryCall: (req) => ({ payload: { body: req.payload?.body ?? new Uint8Array(0) } }),
      }),
  });
  // Raw MQTT.js sink: counts publishes' bytes, answers at the marker.
  const raw = await connectAsync(url as string, { clientId: "bench-bridge-raw-sink" });
  (raw.stream as unknown as { setNoDelay(b: boolean): void }).setNoDelay(true);
  let rawBytes = 0;
  raw.on("message", (topic, payload) => {
    if (topic === RAW_TOPIC) rawBytes += payload.length;
    else if (topic === `${RAW_TOPIC}/end`) {
      raw.publish(`${RAW_TOPIC}/done`, `done ${rawBytes}`, { qos: 1 });
      rawBytes = 0;
    }
  });
  await raw.subscribeAsync([RAW_TOPIC, `${RAW_TOPIC}/end`], { qos: 1 });
  // TCP sink on loopback.
  const tcp = createServer((socket) => {
    let n = 0;
    socket.on("data", (d) => {
      n += d.length;
    });
    socket.on("end", () => socket.end(`done ${n}`));
  });
  await new Promise<void>((resolve) => tcp.listen(0, "127.0.0.1", resolve));
  stop = async () => {
    injector.destroy();
    server.forceShutdown();
    await Promise.all([bulk.close(), grpcPort.close(), native.close(), raw.endAsync()]);
    await new Promise((resolve) => tcp.close(resolve));
  };
  send({ ready: true, tcpPort: (tcp.address() as { port: number }).port });
}

interface Child {
  readonly info: Record<string, unknown>;
  stop(): Promise<void>;
}

async function forkRole(role: Role, url?: string): Promise<Child> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ["--role", role, url ?? ""], {
    execArgv: ["--import", "tsx"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const info = await new Promise<Record<string, unknown>>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`${role} exited with ${code}`)));
    child.on("message", (m) => {
      if ((m as { ready?: boolean }).ready) resolve(m as Record<string, unknown>);
    });
  });
  return {
    info,
    stop: () =>
      new Promise((resolve) => {
        child.removeAllListeners("exit");
        child.once("exit", () => resolve());
        child.send("stop");
      }),
  };
}

// ---- measuring ----------------------------------------------------------------

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

async function rounds(run: () => Promise<number>): Promise<number> {
  await run();
  const xs: number[] = [];
  for (let r = 0; r < ROUNDS; r++) xs.push(await run());
  return median(xs);
}

/** Writes BULK_BYTES in WRITE_BYTES writes with backpressure, ends, and reads the sink's answer. */
async function bulkOver(socket: Socket | import("node:stream").Duplex): Promise<number> {
  const block = Buffer.alloc(WRITE_BYTES, 0x5a);
  const answer = (async () => {
    let text = "";
    for await (const chunk of socket) text += chunk.toString();
    return text;
  })();
  const started = performance.now();
  for (let sent = 0; sent < BULK_BYTES; sent += WRITE_BYTES) {
    if (!socket.write(block)) await once(socket, "drain");
  }
  socket.end();
  const text = await answer;
  const seconds = (performance.now() - started) / 1000;
  if (text !== `done ${BULK_BYTES}`) throw new Error(`the sink answered "${text}"`);
  return BULK_BYTES / MiB / seconds;
}

async function p50(call: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 100; i++) await call();
  const samples: number[] = [];
  for (let i = 0; i < LATENCY_CALLS; i++) {
    const t = performance.now();
    await call();
    samples.push(performance.now() - t);
  }
  return median(samples);
}

/** Runs the net-bridge rows on one broker (the device side in a child process). */
export async function netBridgeScenarios(broker: {
  name: string;
  url: string;
}): Promise<NetBridgeResult> {
  const device = await forkRole("device", broker.url);
  const caller = { url: broker.url, clientId: "bench-bridge-caller" };
  try {
    // Timed from 'connect', as the TCP row and the raw publisher's connected client are.
    const bridge = await rounds(async () => {
      const socket = connectMqtt({ mqtt: caller, serverId: DEVICE, port: BULK_PORT });
      await once(socket, "connect");
      return bulkOver(socket);
    });
    console.log(`  bridge bulk: ${bridge.toFixed(1)} MiB/s`);

    const publisher = await connectAsync(broker.url, { clientId: "bench-bridge-raw-pub" });
    (publisher.stream as unknown as { setNoDelay(b: boolean): void }).setNoDelay(true);
    await publisher.subscribeAsync(`${RAW_TOPIC}/done`, { qos: 1 });
    const chunk = Buffer.alloc(RAW_PUBLISH_BYTES, 0x5a);
    const rawMqtt = await rounds(async () => {
      const done = new Promise<Buffer>((resolve) =>
        publisher.once("message", (_topic, payload) => resolve(payload)),
      );
      const started = performance.now();
      let sent = 0;
      while (sent < BULK_BYTES) {
        const n = Math.min(RAW_PUBLISH_BYTES, BULK_BYTES - sent);
        publisher.publish(RAW_TOPIC, n === RAW_PUBLISH_BYTES ? chunk : chunk.subarray(0, n), {
          qos: 1,
        });
        sent += n;
      }
      publisher.publish(`${RAW_TOPIC}/end`, "", { qos: 1 });
      const payload = await done;
      const seconds = (performance.now() - started) / 1000;
      if (payload.toString() !== `done ${BULK_BYTES}`) {
        throw new Error(`the raw sink answered "${payload.toString()}"`);
      }
      return BULK_BYTES / MiB / seconds;
    });
    await publisher.endAsync();
    console.log(`  raw MQTT.js publishes: ${rawMqtt.toFixed(1)} MiB/s`);

    const tcp = await rounds(async () => {
      const socket = tcpConnect(device.info.tcpPort as number, "127.0.0.1");
      await once(socket, "connect");
      return bulkOver(socket);
    });
    console.log(`  loopback TCP: ${tcp.toFixed(1)} MiB/s`);

    const sessions = new Http2SessionManager(
      "http://device:50051",
      {},
      {
        createConnection: () => connectMqtt({ mqtt: caller, serverId: DEVICE, port: GRPC_PORT }),
      },
    );
    const overBridge = createClient(
      TestService,
      createGrpcTransport({ baseUrl: "http://device:50051", sessionManager: sessions }),
    );
    const transport = createMqttTransport({ mqtt: caller, serverId: `${DEVICE}-native` });
    const native = createClient(TestService, transport);
    const request = { payload: { body: new Uint8Array(32) } };
    // Interleaved rounds, so that load from other tenants hits both alike.
    const bridgeSamples: number[] = [];
    const nativeSamples: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      bridgeSamples.push(await p50(() => overBridge.unaryCall(request)));
      nativeSamples.push(await p50(() => native.unaryCall(request)));
    }
    sessions.abort();
    await transport.close();
    const unary = { bridgeGrpc: median(bridgeSamples), nativeMqrpc: median(nativeSamples) };
    console.log(
      `  unary p50: gRPC over the bridge ${unary.bridgeGrpc.toFixed(3)} ms, native mqrpc ${unary.nativeMqrpc.toFixed(3)} ms`,
    );
    return { broker: broker.name, bulk: { bridge, rawMqtt, tcp }, unary };
  } finally {
    await device.stop();
  }
}

/** The rows as a text table and a Markdown section (targets and ratios). */
export function renderNetBridge(results: readonly NetBridgeResult[]): {
  table: string;
  markdown: string;
} {
  const rows: string[][] = [];
  for (const r of results) {
    const bulkRatio = r.bulk.bridge / r.bulk.rawMqtt;
    rows.push(
      [
        r.broker,
        "64 MiB MiB/s, bridge / raw MQTT.js publishes",
        bulkRatio.toFixed(2),
        "≥ 0.7",
        bulkRatio >= 0.7 ? "yes" : "no",
      ],
      [
        r.broker,
        "64 MiB MiB/s, bridge / loopback TCP",
        (r.bulk.bridge / r.bulk.tcp).toFixed(3),
        "reported",
        "—",
      ],
      [
        r.broker,
        "unary p50, gRPC over the bridge / native mqrpc",
        (r.unary.bridgeGrpc / r.unary.nativeMqrpc).toFixed(2),
        "reported",
        "—",
      ],
    );
  }
  const header = ["broker", "measure", "ratio", "target", "met"];
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.map((row) => row[i]?.length ?? 0)),
  );
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] as number)).join("  ");
  const numbers = results.map(
    (r) =>
      `${r.broker}: bridge ${r.bulk.bridge.toFixed(1)} MiB/s, raw MQTT.js ${r.bulk.rawMqtt.toFixed(1)} MiB/s, TCP ${r.bulk.tcp.toFixed(0)} MiB/s; unary p50 gRPC over the bridge ${r.unary.bridgeGrpc.toFixed(3)} ms, native mqrpc ${r.unary.nativeMqrpc.toFixed(3)} ms`,
  );
  const table = ["net-bridge", line(header), ...rows.map(line), ...numbers].join("\n");
  const markdown = [
    "",
    "## net-bridge",
    "",
    `A 64 MiB transfer written to a bridged socket (\`connectMqtt\` → \`listenMqtt\`, ${WRITE_BYTES / 1024} KiB writes) until the device side read it all, next to QoS 1 MQTT.js publishes of the same bytes (${RAW_PUBLISH_BYTES} B each, the bridge's message size, all at once) and to loopback TCP; and the p50 of ${LATENCY_CALLS} sequential unary calls of a grpc-js server behind \`listenMqtt\` called by a Connect-node gRPC client through \`connectMqtt\`, next to the same call over native mqrpc. Medians of ${ROUNDS} rounds after a warm-up; the device side in a child process.`,
    "",
    `| ${header.join(" | ")} |`,
    `| ${header.map(() => "---").join(" | ")} |`,
    ...rows.map((row) => `| ${row.join(" | ")} |`),
    "",
    ...numbers.map((n) => `- ${n}`),
    "",
  ].join("\n");
  return { table, markdown };
}

// ---- standalone -----------------------------------------------------------------

async function standalone(args: string[]): Promise<void> {
  const wanted = args.find((a) => a.startsWith("--brokers="))?.slice("--brokers=".length);
  const pick = (name: string) => wanted === undefined || wanted.split(",").includes(name);
  const brokers: Array<{ name: string; url: string; stop(): Promise<void> }> = [];
  const results: NetBridgeResult[] = [];
  try {
    if (pick("aedes")) {
      const aedes = await forkRole("aedes");
      brokers.push({ name: "aedes", url: aedes.info.url as string, stop: () => aedes.stop() });
    }
    if (pick("mosquitto") && mosquittoAvailable()) {
      const mosquitto = await startMosquitto();
      brokers.push({ name: "mosquitto", url: mosquitto.url, stop: () => mosquitto.stop() });
    }
    for (const broker of brokers) {
      console.log(`broker ${broker.name}`);
      results.push(await netBridgeScenarios(broker));
    }
  } finally {
    for (const broker of brokers) await broker.stop();
  }
  console.log(`\n${renderNetBridge(results).table}`);
}

const roleAt = process.argv.indexOf("--role");
if (roleAt >= 0) {
  runRole(process.argv[roleAt + 1] as Role, process.argv[roleAt + 2] || undefined).catch(
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  standalone(process.argv.slice(2)).then(
    () => process.exit(0),
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
}
