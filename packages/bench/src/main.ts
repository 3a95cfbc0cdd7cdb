/**
 * `npm run bench`: mqrpc next to raw MQTT.js (the floor), @grpc/grpc-js over
 * HTTP/2 loopback and mqtt-json-rpc, on the same brokers (embedded Aedes, and
 * Mosquitto with set_tcp_nodelay when installed), with the same process
 * layout for every contender: broker and server side in child processes,
 * the measuring client here. Medians of several rounds after a warm-up.
 * Prints the table, writes docs/bench-results.json, docs/benchmarks.svg and
 * docs/BENCHMARKS.md.
 */
import { type ChildProcess, fork } from "node:child_process";
import { writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { fileURLToPath } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createMqttTransport } from "@mqrpc/runtime";
import { connectAsync, type MqttClient } from "mqtt";
import MqttJsonRpc from "mqtt-json-rpc";
import { mosquittoAvailable, startMosquitto } from "../../../test/brokers/mosquitto.js";
import {
  SimpleRequestSchema,
  SimpleResponseSchema,
  TestService,
} from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { ECHO_BYTES, INTEROP_PROTO, LARGE_BYTES, PROTO_ROOT } from "./echo-service.js";
import { type Results, renderReport } from "./report.js";
import { scaleScenarios } from "./scale.js";
import { renderTopologies, topologyScenarios } from "./topologies.js";

const ROUNDS = 3;
const LATENCY_ROUNDS = 9;
const LATENCY_CALLS = 800;
const THROUGHPUT_MS = 1500;
const STREAM_MESSAGES = 100_000;
const docs = (name: string) => fileURLToPath(new URL(`../../../docs/${name}`, import.meta.url));

/**
 * Command-line selection, for working on one number at a time:
 * `npm run bench -- --only=unary,stream,large,scale,wire,topology --brokers=aedes,mosquitto,nats
 * --contenders=raw,mqrpc,grpc,json --profile`. A selective run prints its
 * table but leaves docs/ alone; `--profile` writes V8 CPU profiles of the
 * measuring process and the peers to .tmp/profiles.
 */
const cli = parseCli(process.argv.slice(2));

function parseCli(args: string[]) {
  const known = new Set(["only", "brokers", "contenders", "profile"]);
  const lists = new Map<string, Set<string>>();
  let profile = false;
  for (const arg of args) {
    const m = /^--([a-z]+)(?:=(.*))?$/.exec(arg);
    if (m === null || !known.has(m[1] as string)) {
      throw new Error(
        `unknown argument ${arg}; use --only=, --brokers=, --contenders= and --profile`,
      );
    }
    if (m[1] === "profile") profile = true;
    else lists.set(m[1] as string, new Set((m[2] ?? "").split(",").filter(Boolean)));
  }
  const pick = (list: string, name: string) => lists.get(list)?.has(name) ?? true;
  return { pick, selective: lists.size > 0, profile };
}

// ---- processes ------------------------------------------------------------

interface Peer {
  readonly info: Record<string, unknown>;
  rss(): Promise<number>;
  stop(): Promise<void>;
}

async function peer(role: string, config: object = {}): Promise<Peer> {
  const child: ChildProcess = fork(
    fileURLToPath(new URL("./peer.ts", import.meta.url)),
    [role, JSON.stringify(config)],
    {
      execArgv: [
        "--import",
        "tsx",
        ...(cli.profile ? ["--cpu-prof", "--cpu-prof-dir=.tmp/profiles"] : []),
      ],
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
    rss: () =>
      new Promise((resolve) => {
        const on = (m: unknown) => {
          const rss = (m as { rss?: number }).rss;
          if (rss !== undefined) {
            child.off("message", on);
            resolve(rss);
          }
        };
        child.on("message", on);
        child.send("rss");
      }),
    stop: () =>
      new Promise((resolve) => {
        child.removeAllListeners("exit");
        child.once("exit", () => resolve());
        child.send("stop");
      }),
  };
}

// ---- measuring ------------------------------------------------------------

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const percentile = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] as number;

type Call = () => Promise<unknown>;

/** One latency round: `calls` calls one after another; p50 and p99 in ms. */
async function latencyRound(call: Call, calls: number): Promise<{ p50: number; p99: number }> {
  const samples: number[] = [];
  for (let i = 0; i < calls; i++) {
    const t = performance.now();
    await call();
    samples.push(performance.now() - t);
  }
  return { p50: percentile(samples, 0.5), p99: percentile(samples, 0.99) };
}

/** One throughput round: calls per second with `concurrency` callers for THROUGHPUT_MS. */
async function throughputRound(call: Call, concurrency = 64): Promise<number> {
  let done = 0;
  const end = performance.now() + THROUGHPUT_MS;
  const t = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        await call();
        done++;
      }
    }),
  );
  return done / ((performance.now() - t) / 1000);
}

async function rounds(run: () => Promise<number>): Promise<number> {
  await run();
  const xs: number[] = [];
  for (let r = 0; r < ROUNDS; r++) xs.push(await run());
  return median(xs);
}

// ---- contenders -----------------------------------------------------------

async function rawPair(url: string) {
  const echo = await peer("raw-echo", { url });
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
    close: async () => {
      await client.endAsync();
      await echo.stop();
    },
  };
}

async function mqrpcPair(url: string, batched = false) {
  const server = await peer("mqrpc-server", { url, batched });
  const transport = createMqttTransport({
    mqtt: url,
    serverId: "bench",
    maxMessageBytes: 64 << 20,
  });
  const client = createClient(TestService, transport);
  const body = new Uint8Array(ECHO_BYTES);
  const call: Call = () => client.unaryCall({ payload: { body } });
  return {
    call,
    client,
    server,
    close: async () => {
      await transport.close();
      await server.stop();
    },
  };
}

async function grpcPair() {
  const server = await peer("grpc-server");
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
  const call: Call = () =>
    new Promise((resolve, reject) =>
      client.unaryCall({ payload: { body } }, (e, res) => (e ? reject(e) : resolve(res))),
    );
  return {
    call,
    close: async () => {
      client.close();
      await server.stop();
    },
  };
}

async function jsonRpcPair(url: string) {
  const server = await peer("jsonrpc-server", { url });
  const mqtt: MqttClient = await connectAsync(url);
  const rpc = new MqttJsonRpc(mqtt);
  const body = "x".repeat(ECHO_BYTES);
  // Calls that time out (its default is 10 s) count as failures of the run.
  const call: Call = () => rpc.call("bench/echo", body);
  return {
    call,
    close: async () => {
      await mqtt.endAsync();
      await server.stop();
    },
  };
}

// ---- scenarios ------------------------------------------------------------

/**
 * The unary contenders are set up side by side and measured in interleaved
 * rounds (raw, mqrpc, grpc-js, mqtt-json-rpc, raw, mqrpc, ...), so that a
 * change of load on a shared machine hits every contender alike instead of
 * skewing the ratios; each number is the median of its rounds.
 */
async function unaryScenarios(url: string, results: Results["brokers"][number]) {
  const contenders: Array<{
    name: string;
    calls: number;
    pair: { call: Call; close(): Promise<void> };
    p50s: number[];
    p99s: number[];
    rates: number[];
    failed?: string;
  }> = [];
  for (const [key, name, make, calls] of [
    ["raw", "raw MQTT.js ping-pong", () => rawPair(url), LATENCY_CALLS],
    ["mqrpc", "mqrpc", () => mqrpcPair(url), LATENCY_CALLS],
    ["grpc", "@grpc/grpc-js (HTTP/2)", () => grpcPair(), LATENCY_CALLS],
    // ~44 ms per call (its QoS 2 request and per-call subscriptions): fewer samples.
    ["json", "mqtt-json-rpc", () => jsonRpcPair(url), 40],
  ] as const) {
    if (!cli.pick("contenders", key)) continue;
    contenders.push({ name, calls, pair: await make(), p50s: [], p99s: [], rates: [] });
  }
  const each = async (step: (c: (typeof contenders)[number]) => Promise<void>) => {
    for (const c of contenders) {
      if (c.failed !== undefined) continue;
      try {
        await step(c);
      } catch (e) {
        c.failed = String(e);
      }
    }
  };
  // Warm-up: JIT, connections, broker sessions.
  await each(async (c) => {
    for (let i = 0; i < Math.min(300, c.calls); i++) await c.pair.call();
    await throughputRound(c.pair.call);
  });
  for (let r = 0; r < LATENCY_ROUNDS; r++) {
    await each(async (c) => {
      const { p50, p99 } = await latencyRound(c.pair.call, c.calls);
      c.p50s.push(p50);
      c.p99s.push(p99);
    });
  }
  for (let r = 0; r < ROUNDS; r++) {
    await each(async (c) => {
      c.rates.push(await throughputRound(c.pair.call));
    });
  }
  for (const c of contenders) {
    await c.pair.close();
    if (c.failed !== undefined) {
      console.log(`  ${c.name}: failed: ${c.failed}`);
      continue;
    }
    const entry = {
      contender: c.name,
      p50Ms: median(c.p50s),
      p99Ms: median(c.p99s),
      callsPerSecond: median(c.rates),
    };
    results.unary.push(entry);
    console.log(
      `  ${c.name}: p50 ${entry.p50Ms.toFixed(3)} ms, p99 ${entry.p99Ms.toFixed(3)} ms, ${entry.callsPerSecond.toFixed(0)} calls/s at 64`,
    );
  }
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
  const publisher = await peer("raw-stream", { url, count: STREAM_MESSAGES });
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

/**
 * Runs `run` while sampling every 5 ms the RSS of this process and of
 * `other`; returns its result and both peaks above their idle values.
 */
async function peakRss<T>(
  other: Peer,
  run: () => Promise<T>,
): Promise<{ result: T; client: number; server: number }> {
  const idleClient = process.memoryUsage().rss;
  const idleServer = await other.rss();
  let peakClient = idleClient;
  let peakServer = idleServer;
  const sampler = setInterval(() => {
    peakClient = Math.max(peakClient, process.memoryUsage().rss);
    void other.rss().then((r) => {
      peakServer = Math.max(peakServer, r);
    });
  }, 5);
  try {
    const result = await run();
    return { result, client: peakClient - idleClient, server: peakServer - idleServer };
  } finally {
    clearInterval(sampler);
  }
}

/** Frame overhead on the wire of a real unary call: publish size minus the serialized message. */
async function wireBytes(url: string, results: Results) {
  const server = await peer("mqrpc-server", { url });
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

async function main(): Promise<void> {
  const started = Date.now();
  const results: Results = {
    command: "npm run bench",
    date: new Date().toISOString(),
    machine: `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`,
    brokers: [],
    wire: { requestOverheadBytes: 0, responseOverheadBytes: 0 },
  };
  const brokers: Array<{ name: string; url: string; stop(): Promise<void> }> = [];
  if (cli.pick("brokers", "aedes")) {
    const aedes = await peer("aedes");
    brokers.push({ name: "aedes", url: aedes.info.url as string, stop: () => aedes.stop() });
  }
  if (cli.pick("brokers", "mosquitto") && mosquittoAvailable()) {
    // $SYS every second: the scale rows count connections and subscriptions there.
    const mosquitto = await startMosquitto({ extraConfig: "sys_interval 1" });
    brokers.push({ name: "mosquitto", url: mosquitto.url, stop: () => mosquitto.stop() });
  }
  try {
    for (const broker of brokers) {
      console.log(`broker ${broker.name}`);
      const entry: Results["brokers"][number] = { broker: broker.name, unary: [], stream: [] };
      results.brokers.push(entry);
      if (cli.pick("only", "unary")) await unaryScenarios(broker.url, entry);
      if (cli.pick("only", "stream")) await streamScenarios(broker.url, entry);
      if (cli.pick("only", "large")) await largeScenarios(broker.url, entry);
      if (cli.pick("only", "scale")) await scaleScenarios(broker, entry);
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
  if (topologies !== undefined) report.table += `\n\n${topologies.table}`;
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
