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
 *
 * Every round has a time budget as well as a count, whichever comes first:
 * a slow topology costs seconds, not minutes. (A NATS cluster carries each
 * QoS 1 publish through JetStream R3: raw MQTT.js QoS 1 publishes from node
 * a to node b arrived at 130 to 1,800 per second on a shared 2-core
 * machine, with the stream leaders' placement and the load, where one
 * nats-server took 17,000.) A stream cut by its budget is cancelled and its
 * rate is what arrived over the time it ran; a unary round cut by its
 * budget keeps the calls that completed. Each row says what it measured
 * and what the budget cut.
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
/** A unary round ends after {@link LATENCY_CALLS} calls or this long, whichever first, ms. */
const LATENCY_ROUND_MS = 3_000;
const WARM_UP_CALLS = 200;
/** The unary warm-up ends after {@link WARM_UP_CALLS} calls or this long, ms. */
const WARM_UP_MS = 2_000;
const STREAM_ROUNDS = 3;
/** Messages per measured stream: NATS stores every QoS 1 message in JetStream, so fewer than the stream rows'. */
const STREAM_MESSAGES = 20_000;
/** A stream round ends after {@link STREAM_MESSAGES} or this long, whichever first, ms. */
const STREAM_ROUND_MS = 5_000;
const STREAM_WARM_UP_MESSAGES = 1_000;
/** The stream warm-up ends after {@link STREAM_WARM_UP_MESSAGES} or this long, ms. */
const STREAM_WARM_UP_MS = 2_000;

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
  /** Unary calls timed, over every round. */
  readonly unaryCalls: number;
  /** Stream messages timed, over every round, unbatched. */
  readonly streamUnbatchedMessages: number;
  /** Stream messages timed, over every round, batched. */
  readonly streamBatchedMessages: number;
  /**
   * The measurements whose rounds the time budget ended before their count
   * (e.g. `unbatched stream: 3 of 3 rounds`); empty when none was.
   */
  readonly cutByBudget: readonly string[];
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
    const calls = running.map(() => 0);
    const cutRounds = running.map(() => 0);
    const body = new Uint8Array(ECHO_BYTES);
    for (const { pair } of running) {
      await unaryRound(pair.client, body, WARM_UP_CALLS, WARM_UP_MS);
    }
    for (let round = 0; round < LATENCY_ROUNDS; round++) {
      for (const [i, { pair }] of running.entries()) {
        const { samples, cut } = await unaryRound(
          pair.client,
          body,
          LATENCY_CALLS,
          LATENCY_ROUND_MS,
        );
        if (samples.length > 0) {
          p50s[i]?.push(percentile(samples, 0.5));
          p99s[i]?.push(percentile(samples, 0.99));
        }
        calls[i] = (calls[i] ?? 0) + samples.length;
        if (cut) cutRounds[i] = (cutRounds[i] ?? 0) + 1;
      }
    }
    for (const { pair } of running) await pair.close();
    const results: TopologyResult[] = [];
    for (const [i, { setup, endpoints }] of running.entries()) {
      const cutByBudget: string[] = [];
      if ((cutRounds[i] ?? 0) > 0)
        cutByBudget.push(`unary: ${cutRounds[i]} of ${LATENCY_ROUNDS} rounds`);
      const streams = { unbatched: { rate: 0, messages: 0 }, batched: { rate: 0, messages: 0 } };
      for (const batched of [false, true]) {
        const mode = batched ? "batched" : "unbatched";
        const pair = await callerPair(endpoints, batched);
        try {
          await streamRound(pair.client, STREAM_WARM_UP_MESSAGES, STREAM_WARM_UP_MS);
          const rounds: StreamRound[] = [];
          for (let r = 0; r < STREAM_ROUNDS; r++)
            rounds.push(await streamRound(pair.client, STREAM_MESSAGES, STREAM_ROUND_MS));
          const cut = rounds.filter((x) => x.cut).length;
          if (cut > 0) cutByBudget.push(`${mode} stream: ${cut} of ${STREAM_ROUNDS} rounds`);
          streams[mode] = {
            rate: median(rounds.map((x) => x.messages / x.seconds)),
            messages: rounds.reduce((sum, x) => sum + x.messages, 0),
          };
          log(
            `  ${setup.setup}, ${mode} stream rounds: ${rounds
              .map((x) => `${x.messages} in ${x.seconds.toFixed(2)} s${x.cut ? " (cut)" : ""}`)
              .join(", ")}`,
          );
        } finally {
          await pair.close();
        }
      }
      const result: TopologyResult = {
        broker,
        setup: setup.setup,
        unaryP50Ms: median(p50s[i] ?? []),
        unaryP99Ms: median(p99s[i] ?? []),
        streamUnbatchedPerSecond: streams.unbatched.rate,
        streamBatchedPerSecond: streams.batched.rate,
        unaryCalls: calls[i] ?? 0,
        streamUnbatchedMessages: streams.unbatched.messages,
        streamBatchedMessages: streams.batched.messages,
        cutByBudget,
      };
      results.push(result);
      log(
        `  ${setup.setup}: unary p50 ${result.unaryP50Ms.toFixed(3)} ms, p99 ${result.unaryP99Ms.toFixed(3)} ms (${result.unaryCalls} calls); ` +
          `stream ${result.streamUnbatchedPerSecond.toFixed(0)} msg/s unbatched, ${result.streamBatchedPerSecond.toFixed(0)} batched` +
          (cutByBudget.length > 0 ? `; cut by the budget: ${cutByBudget.join(", ")}` : ""),
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

/**
 * Sequential unary calls: `calls` of them, or as many as complete within
 * `budgetMs`. A call still in flight at the end of the budget is cancelled
 * and not counted; `cut` says the budget ended the round.
 */
async function unaryRound(
  client: Client<typeof TestService>,
  body: Uint8Array,
  calls: number,
  budgetMs: number,
): Promise<{ samples: number[]; cut: boolean }> {
  const samples: number[] = [];
  const budget = AbortSignal.timeout(budgetMs);
  while (samples.length < calls) {
    const t = performance.now();
    try {
      await client.unaryCall({ payload: { body } }, { signal: budget });
    } catch (error) {
      if (budget.aborted) return { samples, cut: true };
      throw error;
    }
    samples.push(performance.now() - t);
  }
  return { samples, cut: false };
}

/** One stream round: what arrived, over how long, and whether the budget ended it. */
interface StreamRound {
  readonly messages: number;
  readonly seconds: number;
  readonly cut: boolean;
}

/**
 * One server stream of `count` messages, cancelled after `budgetMs` if it
 * has not ended by then: the messages that arrived and the seconds it ran.
 */
async function streamRound(
  client: Client<typeof TestService>,
  count: number,
  budgetMs: number,
): Promise<StreamRound> {
  const budget = AbortSignal.timeout(budgetMs);
  const t = performance.now();
  let n = 0;
  try {
    for await (const _ of client.streamingOutputCall(
      { responseParameters: [{ size: count }] },
      { signal: budget },
    )) {
      n++;
    }
  } catch (error) {
    if (!budget.aborted) throw error;
  }
  const seconds = (performance.now() - t) / 1000;
  if (!budget.aborted && n !== count)
    throw new Error(`the stream delivered ${n} of ${count} messages`);
  return { messages: n, seconds, cut: n < count };
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
 * of its pair, what it measured, and what the time budget cut.
 */
export function renderTopologies(results: TopologyResults): { table: string; markdown: string } {
  const lines: string[] = [
    "| broker | setup | unary p50 ms | p50 / one broker | p99 ms | stream msg/s unbatched | / one broker | batched | / one broker | measured: calls / unbatched / batched messages | cut by the time budget |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const row of results.rows) {
    const base = results.rows.find((r) => r.broker === row.broker && r.setup === "one broker");
    const ratio = (a: number, b: number | undefined) =>
      b === undefined || row === base ? "—" : (a / b).toFixed(2);
    const count = (n: number) => n.toLocaleString("en-US");
    lines.push(
      `| ${row.broker} | ${row.setup} | ${row.unaryP50Ms.toFixed(3)} | ${ratio(row.unaryP50Ms, base?.unaryP50Ms)} | ${row.unaryP99Ms.toFixed(3)} | ` +
        `${row.streamUnbatchedPerSecond.toFixed(0)} | ${ratio(row.streamUnbatchedPerSecond, base?.streamUnbatchedPerSecond)} | ` +
        `${row.streamBatchedPerSecond.toFixed(0)} | ${ratio(row.streamBatchedPerSecond, base?.streamBatchedPerSecond)} | ` +
        `${count(row.unaryCalls)} / ${count(row.streamUnbatchedMessages)} / ${count(row.streamBatchedMessages)} | ` +
        `${row.cutByBudget.length > 0 ? row.cutByBudget.join("; ") : "—"} |`,
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
    `cloud. Unary p50 and p99: ${LATENCY_ROUNDS} interleaved rounds of ${LATENCY_CALLS} sequential calls or`,
    `${LATENCY_ROUND_MS / 1000} s, whichever ends first (median of the rounds); streams: ${STREAM_MESSAGES.toLocaleString("en-US")} messages of 64 bytes`,
    `or ${STREAM_ROUND_MS / 1000} s, whichever ends first, median of ${STREAM_ROUNDS} rounds. A stream the budget ends is`,
    "cancelled and its rate is what arrived over the time it ran. The last columns say how many",
    "calls and messages were timed and which rounds the budget cut. The cluster is slow where",
    "MQTT QoS 1 goes through JetStream: raw MQTT.js QoS 1 across two of its nodes, checked",
    "apart from this table, had a ping-pong p99 of about 250 ms (2 ms at QoS 0) and moved 130 to",
    "1,800 publishes per second one way, with the load and where the stream leaders sat.",
    "",
    table,
    "",
  ].join("\n");
  return { table, markdown };
}
