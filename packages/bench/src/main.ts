/**
 * `npm run bench`: mqrpc next to raw MQTT.js (the floor), @grpc/grpc-js and
 * Connect-node over HTTP/2 loopback and mqtt-json-rpc, on the same brokers
 * (embedded Aedes, and Mosquitto with set_tcp_nodelay when installed), with
 * the same process layout for every contender: broker and server side in
 * child processes, the measuring client here. Medians of several rounds
 * after a warm-up. Also the gateway rows (issue 13: gateway.ts, ingress.ts)
 * and the net-bridge rows (issue 14: net-bridge.ts). Prints the table,
 * writes docs/bench-results.json, docs/benchmarks.svg and docs/BENCHMARKS.md.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createMqttTransport } from "@mqrpc/runtime";
import { connectAsync, type MqttClient } from "mqtt";
import {
  SimpleRequestSchema,
  SimpleResponseSchema,
  TestService,
} from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { startBrokers } from "./brokers.js";
import {
  connectPair,
  grpcPair,
  http2HopPair,
  jsonRpcPair,
  mqrpcPair,
  rawPair,
} from "./contenders.js";
import { ECHO_BYTES, LARGE_BYTES } from "./echo-service.js";
import { gatewayPair } from "./gateway.js";
import { ingressPair } from "./ingress.js";
import {
  LATENCY_CALLS,
  type MeasuredProcess,
  measureSideBySide,
  peakRss,
  rounds,
  type UnaryContender,
} from "./measure.js";
import { netBridgeScenarios } from "./net-bridge.js";
import { profilePeers, startPeer } from "./peers.js";
import { CONTENDER, type Results, renderReport } from "./report.js";
import { scaleScenarios } from "./scale.js";
import { renderTopologies, topologyScenarios } from "./topologies.js";

const STREAM_MESSAGES = 100_000;
const docs = (name: string) => fileURLToPath(new URL(`../../../docs/${name}`, import.meta.url));

/** Names `--only=` takes: groups of rows. */
const ROW_GROUPS = [
  "unary",
  "stream",
  "large",
  "scale",
  "wire",
  "topology",
  "gateway",
  "ingress",
  "bridge",
] as const;
/** Names `--contenders=` takes (see unaryScenarios and net-bridge.ts). */
const CONTENDER_KEYS = [
  "raw",
  "mqrpc",
  "grpc",
  "connect",
  "json",
  "hop",
  "gateway",
  "ingress",
  "ingress-no-schema",
  "bridge",
  "tcp",
  "bridge-grpc",
] as const;
const BROKER_NAMES = ["aedes", "mosquitto", "nats"] as const;

/**
 * Command-line selection, for working on one number at a time:
 * `npm run bench -- --only=unary,stream,large,scale,wire,topology,gateway,ingress,bridge
 * --brokers=aedes,mosquitto,nats --contenders=raw,mqrpc,grpc,connect,json,gateway,ingress,...
 * --profile[=dir]`. A selective run prints its table but leaves docs/ alone;
 * `--profile` writes V8 CPU profiles of the measuring process and the peers
 * to .tmp/profiles (or `dir`).
 */
const cli = parseCli(process.argv.slice(2));

function parseCli(args: string[]) {
  const known: Record<string, readonly string[]> = {
    only: ROW_GROUPS,
    brokers: BROKER_NAMES,
    contenders: CONTENDER_KEYS,
  };
  const lists = new Map<string, Set<string>>();
  let profileDir: string | undefined;
  for (const arg of args) {
    const m = /^--([a-z]+)(?:=(.*))?$/.exec(arg);
    const option = m?.[1] as string;
    if (m === null || (option !== "profile" && known[option] === undefined)) {
      throw new Error(
        `unknown argument ${arg}; use --only=, --brokers=, --contenders= and --profile[=dir]`,
      );
    }
    if (option === "profile") {
      profileDir = m[2] || ".tmp/profiles";
      continue;
    }
    const names = (m[2] ?? "").split(",").filter(Boolean);
    const unknown = names.filter((n) => !known[option]?.includes(n));
    if (unknown.length > 0) {
      throw new Error(
        `--${option}: unknown ${unknown.join(", ")}; known: ${known[option]?.join(", ")}`,
      );
    }
    lists.set(option, new Set(names));
  }
  const pick = (list: string, name: string) => lists.get(list)?.has(name) ?? true;
  return { pick, selective: lists.size > 0, profileDir };
}

// ---- scenarios ------------------------------------------------------------

/**
 * Every unary contender selected, measured side by side in interleaved
 * rounds (measure.ts): `unary` selects raw MQTT.js, mqrpc, grpc-js,
 * Connect-node and mqtt-json-rpc; `gateway` issue 13's row (b) and
 * `ingress` its rows (c), each with their references (mqrpc, grpc-js and
 * Connect-node direct, and the gateway's upstream hop alone). `--contenders=` narrows by key. `shared`: the
 * processes every contender's calls may go through (the broker), whose CPU
 * time per call is counted with the contender's own.
 */
async function unaryScenarios(
  url: string,
  results: Results["brokers"][number],
  shared: readonly MeasuredProcess[],
) {
  const unary = cli.pick("only", "unary");
  const gateway = cli.pick("only", "gateway");
  const ingress = cli.pick("only", "ingress");
  const reference = unary || gateway || ingress;
  const contenders: Array<UnaryContender & { key: string; when: boolean }> = [
    {
      key: "raw",
      name: CONTENDER.raw,
      make: () => rawPair(url),
      calls: LATENCY_CALLS,
      when: unary,
    },
    {
      key: "mqrpc",
      name: CONTENDER.mqrpc,
      make: () => mqrpcPair(url),
      calls: LATENCY_CALLS,
      when: reference,
    },
    { key: "grpc", name: CONTENDER.grpc, make: grpcPair, calls: LATENCY_CALLS, when: reference },
    {
      key: "connect",
      name: CONTENDER.connect,
      make: connectPair,
      calls: LATENCY_CALLS,
      when: reference,
    },
    {
      key: "hop",
      name: CONTENDER.hop,
      make: http2HopPair,
      calls: LATENCY_CALLS,
      when: gateway || ingress,
    },
    // ~44 ms per call (its QoS 2 request and per-call subscriptions): fewer samples.
    { key: "json", name: CONTENDER.json, make: () => jsonRpcPair(url), calls: 40, when: unary },
    {
      key: "gateway",
      name: CONTENDER.gateway,
      make: () => gatewayPair(url),
      calls: LATENCY_CALLS,
      when: gateway,
    },
    {
      key: "ingress",
      name: CONTENDER.ingress,
      make: () => ingressPair(url, true),
      calls: LATENCY_CALLS,
      when: ingress,
    },
    {
      key: "ingress-no-schema",
      name: CONTENDER.ingressNoSchema,
      make: () => ingressPair(url, false),
      calls: LATENCY_CALLS,
      when: ingress,
    },
  ];
  const selected = contenders.filter((c) => c.when && cli.pick("contenders", c.key));
  if (selected.length === 0) return;
  results.unary.push(...(await measureSideBySide(selected, shared)));
}

async function streamScenarios(url: string, results: Results["brokers"][number]) {
  for (const batched of [false, true]) {
    const pair = await mqrpcPair(url, batched);
    const rate = await rounds(async () => {
      const t = performance.now();
      let n = 0;
      for await (const _ of pair.client.streamingOutputCall({
        responseParameters: [{ size: STREAM_MESSAGES }],
      }))
        n++;
      if (n !== STREAM_MESSAGES) throw new Error(`stream delivered ${n}`);
      return n / ((performance.now() - t) / 1000);
    });
    results.stream.push({
      contender: batched ? "mqrpc batched" : "mqrpc unbatched",
      messagesPerSecond: rate,
    });
    console.log(`  stream ${batched ? "batched" : "unbatched"}: ${rate.toFixed(0)} msg/s`);
    await pair.close();
  }
  const publisher = await startPeer("raw-stream", { url, count: STREAM_MESSAGES });
  const client = await connectAsync(url);
  await client.subscribeAsync("raw/stream", { qos: 1 });
  let received = 0;
  let onAll: () => void = () => {};
  client.on("message", () => {
    if (++received === STREAM_MESSAGES) onAll();
  });
  const rate = await rounds(async () => {
    received = 0;
    const all = new Promise<void>((resolve) => {
      onAll = resolve;
    });
    const t = performance.now();
    await client.publishAsync("raw/stream/start", "go", { qos: 1 });
    await all;
    return STREAM_MESSAGES / ((performance.now() - t) / 1000);
  });
  results.stream.push({ contender: "raw MQTT.js QoS 1 publishes", messagesPerSecond: rate });
  console.log(`  raw stream: ${rate.toFixed(0)} msg/s`);
  await client.endAsync();
  await publisher.stop();
}

async function largeScenarios(url: string, results: Results["brokers"][number]) {
  // mqrpc: a 16 MiB unary request, chunked.
  const pair = await mqrpcPair(url);
  const big = new Uint8Array(LARGE_BYTES);
  await pair.call();
  const mqrpc = await peakRss(pair.server, () =>
    rounds(async () => {
      const t = performance.now();
      await pair.client.unaryCall({ payload: { body: big } }, { timeoutMs: 60_000 });
      return LARGE_BYTES / 1e6 / ((performance.now() - t) / 1000);
    }),
  );
  await pair.close();
  // Raw: the same bytes in 128 KiB QoS 1 publishes to an echo that acks each.
  const raw = await rawPair(url);
  await raw.client.subscribeAsync("raw/sink", { qos: 1 });
  const chunk = 128 * 1024 - 200;
  const rawRun = await peakRss(raw.echo, () =>
    rounds(async () => {
      const t = performance.now();
      const pending: Promise<unknown>[] = [];
      for (let off = 0; off < LARGE_BYTES; off += chunk) {
        pending.push(
          raw.client.publishAsync("raw/sink", Buffer.from(big.subarray(off, off + chunk)), {
            qos: 1,
          }),
        );
      }
      await Promise.all(pending);
      return LARGE_BYTES / 1e6 / ((performance.now() - t) / 1000);
    }),
  );
  await raw.close();
  results.large = results.large ?? [];
  results.large.push(
    {
      contender: "mqrpc",
      megabytesPerSecond: mqrpc.result,
      clientPeakAboveIdle: mqrpc.client,
      serverPeakAboveIdle: mqrpc.server,
    },
    {
      contender: "raw MQTT.js chunks",
      megabytesPerSecond: rawRun.result,
      clientPeakAboveIdle: rawRun.client,
      serverPeakAboveIdle: rawRun.server,
    },
  );
  const mib = (n: number) => (n / 2 ** 20).toFixed(1);
  console.log(
    `  16 MiB: mqrpc ${mqrpc.result.toFixed(1)} MB/s (client +${mib(mqrpc.client)} MiB, server +${mib(mqrpc.server)} MiB), raw ${rawRun.result.toFixed(1)} MB/s (publisher +${mib(rawRun.client)} MiB, receiver +${mib(rawRun.server)} MiB)`,
  );
}

/** Frame overhead on the wire of a real unary call: publish size minus the serialized message. */
async function wireBytes(url: string, results: Results) {
  const server = await startPeer("mqrpc-server", { url });
  const mqtt = await connectAsync(url, { clientId: "bench-wire" });
  const sizes: number[] = [];
  const publish = mqtt.publish.bind(mqtt);
  (mqtt as { publish: unknown }).publish = (
    topic: string,
    payload: Uint8Array,
    ...rest: unknown[]
  ) => {
    if (topic.startsWith("mqrpc/s/")) sizes.push(payload.byteLength);
    return (publish as (...a: unknown[]) => MqttClient)(topic, payload, ...rest);
  };
  const replies: number[] = [];
  const observer = await connectAsync(url);
  observer.on("message", (_t, payload) => replies.push(payload.byteLength));
  await observer.subscribeAsync("mqrpc/c/bench-wire/+", { qos: 1 });
  const transport = createMqttTransport({ mqtt, serverId: "bench" });
  const client = createClient(TestService, transport);
  const request = { payload: { body: new Uint8Array(ECHO_BYTES) } };
  await client.unaryCall(request, { timeoutMs: 5000 });
  while (replies.length === 0) await new Promise((r) => setTimeout(r, 5));
  const requestMessage = toBinary(
    SimpleRequestSchema,
    create(SimpleRequestSchema, request),
  ).byteLength;
  const responseMessage = toBinary(
    SimpleResponseSchema,
    create(SimpleResponseSchema, request),
  ).byteLength;
  results.wire = {
    requestOverheadBytes: (sizes[0] ?? 0) - requestMessage,
    responseOverheadBytes: (replies[0] ?? 0) - responseMessage,
  };
  console.log(
    `  frame overhead: request ${results.wire.requestOverheadBytes} B, response ${results.wire.responseOverheadBytes} B`,
  );
  await transport.close();
  await mqtt.endAsync();
  await observer.endAsync();
  await server.stop();
}

/**
 * Profiles this process with V8's CPU profiler until the returned function
 * is called, which writes `bench-main-<pid>.cpuprofile` into `dir`.
 */
async function profileSelf(dir: string): Promise<() => Promise<void>> {
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.start");
  return async () => {
    const { profile } = await session.post("Profiler.stop");
    const file = join(dir, `bench-main-${process.pid}.cpuprofile`);
    writeFileSync(file, JSON.stringify(profile));
    session.disconnect();
    console.log(`CPU profiles in ${dir} (this process: ${file})`);
  };
}

async function main(): Promise<void> {
  let stopProfiling: (() => Promise<void>) | undefined;
  if (cli.profileDir !== undefined) {
    mkdirSync(cli.profileDir, { recursive: true });
    profilePeers(cli.profileDir);
    stopProfiling = await profileSelf(cli.profileDir);
  }
  try {
    await measureAndReport();
  } finally {
    await stopProfiling?.();
  }
}

async function measureAndReport(): Promise<void> {
  const started = Date.now();
  const results: Results = {
    command: "npm run bench",
    date: new Date().toISOString(),
    cores: cpus().length,
    machine: `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`,
    brokers: [],
    wire: { requestOverheadBytes: 0, responseOverheadBytes: 0 },
  };
  // The topology rows start brokers of their own; the others share these.
  const singleBrokerRows = ROW_GROUPS.some(
    (group) => group !== "topology" && cli.pick("only", group),
  );
  const brokers = singleBrokerRows ? await startBrokers((name) => cli.pick("brokers", name)) : [];
  try {
    for (const broker of brokers) {
      console.log(`broker ${broker.name}`);
      const entry: Results["brokers"][number] = { broker: broker.name, unary: [], stream: [] };
      results.brokers.push(entry);
      const brokerProcess = [{ role: "broker", pid: broker.pid }];
      await unaryScenarios(broker.url, entry, brokerProcess);
      if (cli.pick("only", "stream")) await streamScenarios(broker.url, entry);
      if (cli.pick("only", "large")) await largeScenarios(broker.url, entry);
      if (cli.pick("only", "scale")) await scaleScenarios(broker, entry);
      if (cli.pick("only", "bridge"))
        await netBridgeScenarios(
          broker.url,
          entry,
          (key) => cli.pick("contenders", key),
          brokerProcess,
        );
    }
    if (cli.pick("only", "wire") && brokers[0] !== undefined)
      await wireBytes(brokers[0].url, results);
  } finally {
    for (const broker of brokers) await broker.stop();
  }
  // A cluster and a bridge, each next to one broker of its kind (they start their own).
  const topologies = cli.pick("only", "topology")
    ? renderTopologies(await topologyScenarios((broker) => cli.pick("brokers", broker)))
    : undefined;
  results.durationSeconds = (Date.now() - started) / 1000;
  const report = renderReport(results);
  if (!singleBrokerRows) report.table = "";
  if (topologies !== undefined)
    report.table += `${report.table === "" ? "" : "\n\n"}${topologies.table}`;
  if (cli.selective) {
    console.log(`\n${report.table}\n\na selective run: docs/ left as they were`);
    return;
  }
  writeFileSync(docs("bench-results.json"), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(docs("benchmarks.svg"), report.svg);
  writeFileSync(docs("BENCHMARKS.md"), report.markdown + (topologies?.markdown ?? ""));
  console.log(
    `\n${report.table}\n\nwrote docs/BENCHMARKS.md, docs/bench-results.json, docs/benchmarks.svg in ${results.durationSeconds.toFixed(0)} s`,
  );
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
