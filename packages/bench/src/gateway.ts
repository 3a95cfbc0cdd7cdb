/**
 * The gateway benchmark (issue 13, row b): an mqrpc client calling a grpc-js
 * server through MQTT and the gateway, next to (a) a grpc-js client calling
 * the same server directly over HTTP/2 loopback and (d) native mqrpc, on the
 * same broker. Unary p50/p99 one call at a time and calls/s with 64 callers;
 * contenders measured in interleaved rounds like main.ts's unary rows, every
 * server side in its own process (peer.ts; the gateway from ingress-peer.ts),
 * the client here.
 *
 * Standalone: `npx tsx packages/bench/src/gateway.ts [--brokers=aedes,mosquitto]`
 * (build first: `npm run build`). From main.ts: `gatewayScenarios(url, entry)`.
 */
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
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
    { execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"] },
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

interface Pair {
  readonly call: Call;
  close(): Promise<void>;
}

/** (a) A grpc-js TestService client (proto-loader, as grpc-js documents) → grpc-js server. */
async function grpcJsDirect(): Promise<Pair> {
  const server = await peer("./peer.ts", "grpc-server");
  const definition = protoLoader.loadSync(INTEROP_PROTO, { includeDirs: [PROTO_ROOT] });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    mqrpc: { interop: { v1: { TestService: grpc.ServiceClientConstructor } } };
  };
  const client = new pkg.mqrpc.interop.v1.TestService(
    `127.0.0.1:${server.info.port as number}`,
    grpc.credentials.createInsecure(),
  ) as unknown as grpc.Client & {
    unaryCall(req: unknown, cb: (e: Error | null, res: unknown) => void): void;
  };
  const body = Buffer.alloc(ECHO_BYTES);
  return {
    call: () =>
      new Promise((resolve, reject) =>
        client.unaryCall({ payload: { body } }, (e, res) => (e ? reject(e) : resolve(res))),
      ),
    close: async () => {
      client.close();
      await server.stop();
    },
  };
}

/** An mqrpc client on `serverId`. */
function mqrpcCaller(url: string, serverId: string) {
  const transport = createMqttTransport({ mqtt: url, serverId });
  const client = createClient(TestService, transport);
  const body = new Uint8Array(ECHO_BYTES);
  return { call: () => client.unaryCall({ payload: { body } }), close: () => transport.close() };
}

/** (d) Native mqrpc: an mqrpc client → an mqrpc server. */
async function mqrpcNative(url: string): Promise<Pair> {
  const server = await peer("./peer.ts", "mqrpc-server", { url });
  const caller = mqrpcCaller(url, "bench");
  return {
    call: caller.call,
    close: async () => {
      await caller.close();
      await server.stop();
    },
  };
}

/** (b) An mqrpc client → MQTT → gateway → grpc-js server, each in its own process. */
async function throughGateway(url: string): Promise<Pair> {
  const upstream = await peer("./peer.ts", "grpc-server");
  const serverId = "bench-gateway";
  const gateway = await peer("./ingress-peer.ts", "gateway", {
    url,
    serverId,
    upstream: `http://127.0.0.1:${upstream.info.port as number}`,
  });
  const caller = mqrpcCaller(url, serverId);
  return {
    call: caller.call,
    close: async () => {
      await caller.close();
      await gateway.stop();
      await upstream.stop();
    },
  };
}

/** Names of the rows, as they appear in results and the table. */
export const GATEWAY_CONTENDERS = {
  grpc: "@grpc/grpc-js (HTTP/2)",
  mqrpc: "mqrpc",
  gateway: "mqrpc → MQTT → gateway → grpc-js",
} as const;

/** One measured row. */
export interface GatewayRow {
  readonly contender: string;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly callsPerSecond: number;
}

/**
 * Measures the gateway path and its references on the broker at `url`,
 * interleaved; appends the gateway row to `entry.unary` when given, and
 * returns every row with the ratios issue 13 sets targets for: p50 at most
 * 1.5× native mqrpc's, throughput at least grpc-js direct's.
 */
export async function gatewayScenarios(
  url: string,
  entry?: Results["brokers"][number],
): Promise<{ rows: GatewayRow[]; p50VsMqrpc: number; rateVsGrpcJs: number }> {
  const contenders: Array<{
    name: string;
    pair: Pair;
    p50s: number[];
    p99s: number[];
    rates: number[];
  }> = [];
  try {
    for (const [name, make] of [
      [GATEWAY_CONTENDERS.grpc, grpcJsDirect],
      [GATEWAY_CONTENDERS.mqrpc, () => mqrpcNative(url)],
      [GATEWAY_CONTENDERS.gateway, () => throughGateway(url)],
    ] as const) {
      contenders.push({ name, pair: await make(), p50s: [], p99s: [], rates: [] });
    }
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
  const row = (name: string) => rows.find((r) => r.contender === name) as GatewayRow;
  const gateway = row(GATEWAY_CONTENDERS.gateway);
  const ratios = {
    p50VsMqrpc: gateway.p50Ms / row(GATEWAY_CONTENDERS.mqrpc).p50Ms,
    rateVsGrpcJs: gateway.callsPerSecond / row(GATEWAY_CONTENDERS.grpc).callsPerSecond,
  };
  console.log(
    `  gateway path: p50 ${ratios.p50VsMqrpc.toFixed(2)}× native mqrpc (target ≤ 1.5×), ` +
      `throughput ${ratios.rateVsGrpcJs.toFixed(2)}× grpc-js direct (target ≥ 1×)`,
  );
  if (entry !== undefined) entry.unary.push(gateway);
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
      await gatewayScenarios(broker.url);
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
