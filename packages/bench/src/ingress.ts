/**
 * The ingress benchmark (issue 13, row c): a standard gRPC client reaching
 * a gRPC server through ingress → MQTT → gateway, next to the same client
 * and server directly over HTTP/2 loopback (grpc-js, and Connect-node, the
 * faster Node HTTP/2 peer) and native mqrpc, on the same broker. Unary
 * p50/p99 one call at a time and calls/s with 64 callers; contenders are
 * measured in interleaved rounds like main.ts's unary rows, every server
 * side in its own process (peer.ts, ingress-peer.ts), the client here.
 *
 * Standalone: `npx tsx packages/bench/src/ingress.ts [--brokers=aedes,mosquitto]`
 * (build first: `npm run build`). From main.ts: `ingressScenarios(url, entry)`.
 */
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createMqttTransport } from "@mqrpc/runtime";
import { mosquittoAvailable, startMosquitto } from "../../../test/brokers/mosquitto.js";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { ECHO_BYTES, INTEROP_PROTO, PROTO_ROOT } from "./echo-service.js";
import type { Results } from "./report.js";

const ROUNDS = 3;
const LATENCY_ROUNDS = 7;
const LATENCY_CALLS = 800;
const THROUGHPUT_MS = 1500;
const CONCURRENCY = 64;

type Call = () => Promise<unknown>;

interface Peer {
  readonly info: Record<string, unknown>;
  stop(): Promise<void>;
}

/** Forks `script` (peer.ts or ingress-peer.ts) in `role`; resolves once it reports ready. */
async function peer(script: string, role: string, config: object = {}): Promise<Peer> {
  const child: ChildProcess = fork(
    fileURLToPath(new URL(script, import.meta.url)),
    [role, JSON.stringify(config)],
    {
      execArgv: ["--import", "tsx"],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    },
  );
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

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const percentile = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] as number;

async function latencyRound(call: Call, calls: number): Promise<{ p50: number; p99: number }> {
  const samples: number[] = [];
  for (let i = 0; i < calls; i++) {
    const t = performance.now();
    await call();
    samples.push(performance.now() - t);
  }
  return { p50: percentile(samples, 0.5), p99: percentile(samples, 0.99) };
}

async function throughputRound(call: Call): Promise<number> {
  let done = 0;
  const end = performance.now() + THROUGHPUT_MS;
  const t = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < end) {
        await call();
        done++;
      }
    }),
  );
  return done / ((performance.now() - t) / 1000);
}

/** A grpc-js TestService client (proto-loader, as grpc-js documents) calling `address`. */
function grpcJsCaller(address: string, metadata?: Record<string, string>) {
  const definition = protoLoader.loadSync(INTEROP_PROTO, { includeDirs: [PROTO_ROOT] });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    mqrpc: { interop: { v1: { TestService: grpc.ServiceClientConstructor } } };
  };
  const client = new pkg.mqrpc.interop.v1.TestService(
    address,
    grpc.credentials.createInsecure(),
  ) as unknown as grpc.Client & {
    unaryCall(req: unknown, md: grpc.Metadata, cb: (e: Error | null, res: unknown) => void): void;
  };
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(metadata ?? {})) md.set(k, v);
  const body = Buffer.alloc(ECHO_BYTES);
  const call: Call = () =>
    new Promise((resolve, reject) =>
      client.unaryCall({ payload: { body } }, md, (e, res) => (e ? reject(e) : resolve(res))),
    );
  return { call, close: () => client.close() };
}

interface Pair {
  readonly call: Call;
  close(): Promise<void>;
}

async function grpcJsDirect(): Promise<Pair> {
  const server = await peer("./peer.ts", "grpc-server");
  const caller = grpcJsCaller(`127.0.0.1:${server.info.port as number}`);
  return {
    call: caller.call,
    close: async () => {
      caller.close();
      await server.stop();
    },
  };
}

async function connectDirect(): Promise<Pair> {
  const server = await peer("./ingress-peer.ts", "connect-server");
  const client = createClient(
    TestService,
    createGrpcTransport({ baseUrl: `http://127.0.0.1:${server.info.port as number}` }),
  );
  const body = new Uint8Array(ECHO_BYTES);
  return {
    call: () => client.unaryCall({ payload: { body } }),
    close: () => server.stop(),
  };
}

async function mqrpcNative(url: string): Promise<Pair> {
  const server = await peer("./peer.ts", "mqrpc-server", { url });
  const transport = createMqttTransport({ mqtt: url, serverId: "bench" });
  const client = createClient(TestService, transport);
  const body = new Uint8Array(ECHO_BYTES);
  return {
    call: () => client.unaryCall({ payload: { body } }),
    close: async () => {
      await transport.close();
      await server.stop();
    },
  };
}

/** grpc-js client → ingress → MQTT → gateway → grpc-js server, each in its own process. */
async function throughIngress(url: string, schema: boolean): Promise<Pair> {
  const upstream = await peer("./peer.ts", "grpc-server");
  const serverId = schema ? "bench-gw" : "bench-gw-2";
  const gateway = await peer("./ingress-peer.ts", "gateway", {
    url,
    serverId,
    upstream: `http://127.0.0.1:${upstream.info.port as number}`,
  });
  const ingress = await peer("./ingress-peer.ts", "ingress", { url, schema });
  const caller = grpcJsCaller(new URL(ingress.info.url as string).host, {
    "mqrpc-server-id": serverId,
  });
  return {
    call: caller.call,
    close: async () => {
      caller.close();
      await ingress.stop();
      await gateway.stop();
      await upstream.stop();
    },
  };
}

/** Names of the rows, as they appear in results and the table. */
export const INGRESS_CONTENDERS = {
  grpc: "@grpc/grpc-js (HTTP/2)",
  connect: "Connect-node gRPC (HTTP/2)",
  mqrpc: "mqrpc",
  ingress: "grpc-js → ingress → MQTT → gateway → grpc-js",
  ingressNoSchema: "same, ingress without schema",
} as const;

/** One measured row. */
export interface IngressRow {
  readonly contender: string;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly callsPerSecond: number;
}

/**
 * Measures the ingress path and its references on the broker at `url`,
 * interleaved; appends the two new rows (Connect-node direct, and the
 * ingress path with its schema) to `entry.unary` when given, and returns
 * every row with the ratios issue 13 sets targets for.
 */
export async function ingressScenarios(
  url: string,
  entry?: Results["brokers"][number],
): Promise<{
  rows: IngressRow[];
  p50VsMqrpc: number;
  rateVsGrpcJs: number;
  rateVsConnect: number;
}> {
  const contenders: Array<{
    name: string;
    pair: Pair;
    p50s: number[];
    p99s: number[];
    rates: number[];
  }> = [];
  for (const [name, make] of [
    [INGRESS_CONTENDERS.grpc, grpcJsDirect],
    [INGRESS_CONTENDERS.connect, connectDirect],
    [INGRESS_CONTENDERS.mqrpc, () => mqrpcNative(url)],
    [INGRESS_CONTENDERS.ingress, () => throughIngress(url, true)],
    [INGRESS_CONTENDERS.ingressNoSchema, () => throughIngress(url, false)],
  ] as const) {
    contenders.push({ name, pair: await make(), p50s: [], p99s: [], rates: [] });
  }
  try {
    for (const c of contenders) {
      for (let i = 0; i < 300; i++) await c.pair.call();
      await throughputRound(c.pair.call);
    }
    for (let r = 0; r < LATENCY_ROUNDS; r++) {
      for (const c of contenders) {
        const { p50, p99 } = await latencyRound(c.pair.call, LATENCY_CALLS);
        c.p50s.push(p50);
        c.p99s.push(p99);
      }
    }
    for (let r = 0; r < ROUNDS; r++) {
      for (const c of contenders) c.rates.push(await throughputRound(c.pair.call));
    }
  } finally {
    for (const c of contenders) await c.pair.close();
  }
  const rows = contenders.map((c) => ({
    contender: c.name,
    p50Ms: median(c.p50s),
    p99Ms: median(c.p99s),
    callsPerSecond: median(c.rates),
  }));
  for (const row of rows) {
    console.log(
      `  ${row.contender}: p50 ${row.p50Ms.toFixed(3)} ms, p99 ${row.p99Ms.toFixed(3)} ms, ${row.callsPerSecond.toFixed(0)} calls/s at ${CONCURRENCY}`,
    );
  }
  const row = (name: string) => rows.find((r) => r.contender === name) as IngressRow;
  const ingress = row(INGRESS_CONTENDERS.ingress);
  const ratios = {
    p50VsMqrpc: ingress.p50Ms / row(INGRESS_CONTENDERS.mqrpc).p50Ms,
    rateVsGrpcJs: ingress.callsPerSecond / row(INGRESS_CONTENDERS.grpc).callsPerSecond,
    rateVsConnect: ingress.callsPerSecond / row(INGRESS_CONTENDERS.connect).callsPerSecond,
  };
  console.log(
    `  ingress path: p50 ${ratios.p50VsMqrpc.toFixed(2)}× native mqrpc (target ≤ 2.5×), ` +
      `throughput ${ratios.rateVsGrpcJs.toFixed(2)}× grpc-js direct and ${ratios.rateVsConnect.toFixed(2)}× Connect-node direct (target ≥ 1×)`,
  );
  if (entry !== undefined) {
    entry.unary.push(row(INGRESS_CONTENDERS.connect), ingress);
  }
  return { rows, ...ratios };
}

/** Standalone run: `--brokers=aedes,mosquitto` (both by default, Mosquitto when installed). */
async function main(): Promise<void> {
  const arg = process.argv.slice(2).find((a) => a.startsWith("--brokers="));
  const wanted = new Set((arg?.slice("--brokers=".length) ?? "aedes,mosquitto").split(","));
  const brokers: Array<{ name: string; url: string; stop(): Promise<void> }> = [];
  if (wanted.has("aedes")) {
    const aedes = await peer("./peer.ts", "aedes");
    brokers.push({ name: "aedes", url: aedes.info.url as string, stop: () => aedes.stop() });
  }
  if (wanted.has("mosquitto") && mosquittoAvailable()) {
    const mosquitto = await startMosquitto();
    brokers.push({ name: "mosquitto", url: mosquitto.url, stop: () => mosquitto.stop() });
  }
  try {
    for (const broker of brokers) {
      console.log(`broker ${broker.name}`);
      await ingressScenarios(broker.url);
    }
  } finally {
    for (const broker of brokers) await broker.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      console.error(e);
      process.exit(1);
    },
  );
}
