/**
 * The topology rows of `npm run bench` (`--only=topology`): mqrpc across a
 * broker cluster and across a bridge, each next to one broker of the same
 * kind measured in the same run.
 *
 * - NATS: a three-node cluster (test/brokers/nats-cluster.ts: routes,
 *   JetStream R3, MQTT on every node), the device server on node a and the
 *   caller on node b; against one nats-server in MQTT mode.
 * - Mosquitto: an edge broker bridged to a cloud broker with the bridge
 *   block of docs/DEPLOYMENT.md (test/brokers/mosquitto-bridge.ts, no fault
 *   proxy), the device server on the edge and the caller on the cloud;
 *   against one Mosquitto.
 *
 * Same layout as the other rows: the server side (packages/bench/src/peer.ts)
 * in a child process, the measuring caller here. Unary p50: sequential
 * 32-byte echo calls, the two setups of a pair measured in interleaved
 * rounds (median of the rounds). Stream throughput: a server stream of
 * 64-byte messages, unbatched and batched (median of rounds after a
 * warm-up). Each broker and process is stopped before the next pair starts.
 */
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { type Client, createClient } from "@connectrpc/connect";
import { createMqttTransport, type MqttTransport } from "@mqrpc/runtime";
import { mosquittoAvailable, startMosquitto } from "../../../test/brokers/mosquitto.js";
import { startMosquittoBridge } from "../../../test/brokers/mosquitto-bridge.js";
import { natsAvailable, startNats } from "../../../test/brokers/nats.js";
import { startNatsCluster } from "../../../test/brokers/nats-cluster.js";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { ECHO_BYTES } from "./echo-service.js";

const LATENCY_ROUNDS = 7;
const LATENCY_CALLS = 300;
const STREAM_ROUNDS = 3;
/** Messages per measured stream: NATS stores every QoS 1 message in JetStream, so fewer than the stream rows'. */
const STREAM_MESSAGES = 20_000;

/** One setup (a single broker, or a topology) and what was measured on it. */
export interface TopologyResult {
  /** `nats` or `mosquitto`. */
  readonly broker: string;
  /** e.g. `one broker`, `cluster, device on node a, caller on node b`. */
  readonly setup: string;
  readonly unaryP50Ms: number;
  readonly unaryP99Ms: number;
  readonly streamUnbatchedPerSecond: number;
  readonly streamBatchedPerSecond: number;
}

/** What `topologyScenarios` measured, single-broker rows first in each pair. */
export interface TopologyResults {
  readonly rows: TopologyResult[];
  /** Pairs skipped, with why (a broker not installed). */
  readonly skipped: string[];
}

interface Endpoints {
  /** Where the device server connects. */
  readonly serverUrl: string;
  /** Where the caller connects. */
  readonly callerUrl: string;
  stop(): Promise<unknown>;
}

interface Setup {
  readonly setup: string;
  start(): Promise<Endpoints>;
}

/**
 * Both rows of every pair whose broker is installed and `wanted` (by
 * broker kind: `nats`, `mosquitto`); `log` receives progress lines.
 */
export async function topologyScenarios(
  wanted: (broker: string) => boolean = () => true,
  log: (line: string) => void = console.log,
): Promise<TopologyResults> {
  const rows: TopologyResult[] = [];
  const skipped: string[] = [];
  const pairs: Array<{ broker: string; available: boolean; setups: [Setup, Setup] }> = [
    {
      broker: "nats",
      available: natsAvailable(),
      setups: [
        {
          setup: "one broker",
          async start() {
            const nats = await startNats();
            return { serverUrl: nats.url, callerUrl: nats.url, stop: () => nats.stop() };
          },
        },
        {
          setup: "3-node cluster, server on node a, caller on node b",
          async start() {
            const cluster = await startNatsCluster();
            const [a, b] = cluster.nodes;
            return { serverUrl: a.url, callerUrl: b.url, stop: () => cluster.stop() };
          },
        },
      ],
    },
    {
      broker: "mosquitto",
      available: mosquittoAvailable(),
      setups: [
        {
          setup: "one broker",
          async start() {
            const mosquitto = await startMosquitto();
            return {
              serverUrl: mosquitto.url,
              callerUrl: mosquitto.url,
              stop: () => mosquitto.stop(),
            };
          },
        },
        {
          setup: "edge bridged to cloud, server on the edge, caller on the cloud",
          async start() {
            const bridge = await startMosquittoBridge({ direct: true });
            return {
              serverUrl: bridge.edge.url,
              callerUrl: bridge.cloud.url,
              stop: () => bridge.stop(),
            };
          },
        },
      ],
    },
  ];
  for (const { broker, available, setups } of pairs) {
    if (!wanted(broker)) continue;
    if (!available) {
      skipped.push(`${broker} (not installed)`);
      log(`topology ${broker}: skipped, not installed`);
      continue;
    }
    log(`topology ${broker}`);
    rows.push(...(await measurePair(broker, setups, log)));
  }
  return { rows, skipped };
}

/** Measures both setups of a pair: unary rounds interleaved, then the streams of each. */
async function measurePair(
  broker: string,
  setups: [Setup, Setup],
  log: (line: string) => void,
): Promise<TopologyResult[]> {
  const running: Array<{ setup: Setup; endpoints: Endpoints; pair: CallerPair }> = [];
  try {
    for (const setup of setups) {
      const endpoints = await setup.start();
      running.push({ setup, endpoints, pair: await callerPair(endpoints, false) });
    }
    const p50s = running.map(() => [] as number[]);
    const p99s = running.map(() => [] as number[]);
    const body = new Uint8Array(ECHO_BYTES);
    for (const { pair } of running) {
      for (let i = 0; i < 200; i++) await pair.client.unaryCall({ payload: { body } });
    }
    for (let round = 0; round < LATENCY_ROUNDS; round++) {
      for (const [i, { pair }] of running.entries()) {
        const samples: number[] = [];
        for (let c = 0; c < LATENCY_CALLS; c++) {
          const t = performance.now();
          await pair.client.unaryCall({ payload: { body } });
          samples.push(performance.now() - t);
        }
        p50s[i]?.push(percentile(samples, 0.5));
        p99s[i]?.push(percentile(samples, 0.99));
      }
    }
    for (const { pair } of running) await pair.close();
    const results: TopologyResult[] = [];
    for (const [i, { setup, endpoints }] of running.entries()) {
      const rates: Record<"unbatched" | "batched", number> = { unbatched: 0, batched: 0 };
      for (const batched of [false, true]) {
        const pair = await callerPair(endpoints, batched);
        try {
          await streamOnce(pair.client, 1000);
          const xs: number[] = [];
          for (let r = 0; r < STREAM_ROUNDS; r++)
            xs.push(await streamOnce(pair.client, STREAM_MESSAGES));
          rates[batched ? "batched" : "unbatched"] = median(xs);
        } finally {
          await pair.close();
        }
      }
      const result: TopologyResult = {
        broker,
        setup: setup.setup,
        unaryP50Ms: median(p50s[i] ?? []),
        unaryP99Ms: median(p99s[i] ?? []),
        streamUnbatchedPerSecond: rates.unbatched,
        streamBatchedPerSecond: rates.batched,
      };
      results.push(result);
      log(
        `  ${setup.setup}: unary p50 ${result.unaryP50Ms.toFixed(3)} ms, p99 ${result.unaryP99Ms.toFixed(3)} ms; ` +
          `stream ${result.streamUnbatchedPerSecond.toFixed(0)} msg/s unbatched, ${result.streamBatchedPerSecond.toFixed(0)} batched`,
      );
    }
    return results;
  } finally {
    for (const { endpoints } of running.reverse()) await endpoints.stop();
  }
}

interface CallerPair {
  readonly client: Client<typeof TestService>;
  close(): Promise<void>;
}

/** The bench's mqrpc server (peer.ts) on `serverUrl` in a child process, and a caller here on `callerUrl`. */
async function callerPair(endpoints: Endpoints, batched: boolean): Promise<CallerPair> {
  const server = await startPeer("mqrpc-server", { url: endpoints.serverUrl, batched });
  let transport: MqttTransport | undefined;
  try {
    transport = createMqttTransport({
      mqtt: endpoints.callerUrl,
      serverId: "bench",
      // The server's presence crosses the cluster or the bridge.
      waitForServer: true,
    });
    const client = createClient(TestService, transport);
    await client.unaryCall({}, { timeoutMs: 30_000 });
    const opened = transport;
    return {
      client,
      async close() {
        await opened.close();
        await server.stop();
      },
    };
  } catch (error) {
    await transport?.close();
    await server.stop();
    throw error;
  }
}

/** Messages per second of one server stream of `count` messages. */
async function streamOnce(client: Client<typeof TestService>, count: number): Promise<number> {
  const t = performance.now();
  let n = 0;
  for await (const _ of client.streamingOutputCall(
    { responseParameters: [{ size: count }] },
    { timeoutMs: 300_000 },
  )) {
    n++;
  }
  if (n !== count) throw new Error(`the stream delivered ${n} of ${count} messages`);
  return n / ((performance.now() - t) / 1000);
}

/** A peer.ts child process (see main.ts's `peer`); resolves once it says it is ready. */
async function startPeer(role: string, config: object): Promise<{ stop(): Promise<void> }> {
  const child: ChildProcess = fork(
    fileURLToPath(new URL("./peer.ts", import.meta.url)),
    [role, JSON.stringify(config)],
    { execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"] },
  );
  await new Promise<void>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`${role} exited with ${code}`)));
    child.on("message", (m) => {
      if ((m as { ready?: boolean }).ready) resolve();
    });
  });
  return {
    stop: () =>
      new Promise((resolve) => {
        child.removeAllListeners("exit");
        child.once("exit", () => resolve());
        child.send("stop");
      }),
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const percentile = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] ?? NaN;

/**
 * The rows as a table (printed) and a Markdown section (for
 * docs/BENCHMARKS.md): each topology with its ratios to the single broker
 * of its pair.
 */
export function renderTopologies(results: TopologyResults): { table: string; markdown: string } {
  const lines: string[] = [
    "| broker | setup | unary p50 ms | p50 / one broker | stream msg/s unbatched | / one broker | batched | / one broker |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const row of results.rows) {
    const base = results.rows.find((r) => r.broker === row.broker && r.setup === "one broker");
    const ratio = (a: number, b: number | undefined) =>
      b === undefined || row === base ? "—" : (a / b).toFixed(2);
    lines.push(
      `| ${row.broker} | ${row.setup} | ${row.unaryP50Ms.toFixed(3)} | ${ratio(row.unaryP50Ms, base?.unaryP50Ms)} | ` +
        `${row.streamUnbatchedPerSecond.toFixed(0)} | ${ratio(row.streamUnbatchedPerSecond, base?.streamUnbatchedPerSecond)} | ` +
        `${row.streamBatchedPerSecond.toFixed(0)} | ${ratio(row.streamBatchedPerSecond, base?.streamBatchedPerSecond)} |`,
    );
  }
  const skipped =
    results.skipped.length > 0 ? `\n\nNot measured: ${results.skipped.join(", ")}.` : "";
  const table = `${lines.join("\n")}${skipped}`;
  const markdown = [
    "",
    "## Topologies",
    "",
    "A broker cluster and a bridge next to one broker of the same kind, in the same run",
    "(packages/bench/src/topologies.ts): NATS, three nodes clustered by routes with JetStream R3,",
    "server on one node and caller on another; Mosquitto, an edge broker bridged to a cloud",
    "broker with the bridge block of docs/DEPLOYMENT.md, server on the edge and caller on the",
    `cloud. Unary p50: ${LATENCY_ROUNDS} interleaved rounds of ${LATENCY_CALLS} sequential calls; streams:`,
    `${STREAM_MESSAGES.toLocaleString("en-US")} messages of 64 bytes, median of ${STREAM_ROUNDS} rounds.`,
    "",
    table,
    "",
  ].join("\n");
  return { table, markdown };
}
