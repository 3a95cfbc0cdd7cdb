/**
 * Turns benchmark results into the printed table, the SVG chart and
 * docs/BENCHMARKS.md, all from the same numbers.
 */

/** The contenders' names, as rows carry them in the results and the tables. */
export const CONTENDER = {
  raw: "raw MQTT.js ping-pong",
  mqrpc: "mqrpc",
  grpc: "@grpc/grpc-js (HTTP/2)",
  connect: "Connect-node gRPC (HTTP/2)",
  json: "mqtt-json-rpc",
  /** Reference for issue 13's rows: the gateway's upstream hop alone. */
  hop: "node:http2 → grpc-js (the gateway's upstream hop alone)",
  /** Issue 13 (b). */
  gateway: "mqrpc → MQTT → gateway → grpc-js",
  /** Issue 13 (c). */
  ingress: "grpc-js → ingress → MQTT → gateway → grpc-js",
  /** Issue 13 (c) with an ingress that has no schema: unary calls travel as bidi streams. */
  ingressNoSchema: "grpc-js → ingress without schema → MQTT → gateway → grpc-js",
  bridgeBulk: "net-bridge (connectMqtt → listenMqtt)",
  rawBulk: "raw MQTT.js QoS 1 publishes",
  tcpBulk: "loopback TCP",
  bridgeGrpc: "gRPC over the net-bridge (Connect-node client → grpc-js server)",
} as const;

/** The CPU time one process of a unary contender spent per call in the throughput rounds. */
export interface ProcessCpu {
  /** `client` (the measuring process), `broker`, or the role of a process the contender started (`gateway`, `grpc-server`...). */
  role: string;
  /** User + system CPU time, every thread, per call completed, µs: the median of the throughput rounds. */
  microsPerCall: number;
}

/** One unary contender's numbers: latency one call at a time, throughput at concurrency 64. */
export interface UnaryRow {
  contender: string;
  p50Ms: number;
  p99Ms: number;
  callsPerSecond: number;
  /** CPU per call of every process the calls went through (measure.ts); absent in older results. */
  cpuPerCall?: ProcessCpu[];
}

/**
 * A row's CPU µs per call over all its processes (what bounds its
 * throughput when they share fewer cores than there are processes) and of
 * its busiest process (the bound when each has a core of its own);
 * undefined when not measured.
 */
export function cpuSummary(row: UnaryRow): { total: number; busiest: number } | undefined {
  const cpu = row.cpuPerCall;
  if (cpu === undefined || cpu.length === 0) return undefined;
  return {
    total: cpu.reduce((sum, p) => sum + p.microsPerCall, 0),
    busiest: Math.max(...cpu.map((p) => p.microsPerCall)),
  };
}

/** Raw results of one `npm run bench`, as written to docs/bench-results.json. */
export interface Results {
  command: string;
  date: string;
  machine: string;
  /** CPU cores the run had (the ceiling rows divide by it). */
  cores?: number;
  durationSeconds?: number;
  brokers: Array<{
    broker: string;
    /** Every unary contender measured side by side, the gateway rows (issue 13) included. */
    unary: UnaryRow[];
    stream: Array<{ contender: string; messagesPerSecond: number }>;
    large?: Array<{
      contender: string;
      megabytesPerSecond: number;
      clientPeakAboveIdle?: number;
      serverPeakAboveIdle?: number;
    }>;
    scale?: ScaleRow[];
    /** The net-bridge rows (issue 14, net-bridge.ts). */
    bridge?: {
      /** A 64 MiB transfer, MiB/s (2^20 bytes per second). */
      bulk: Array<{ contender: string; mebibytesPerSecond: number }>;
      /** gRPC over the bridge and native mqrpc, side by side. */
      unary: UnaryRow[];
    };
  }>;
  wire: { requestOverheadBytes: number; responseOverheadBytes: number };
}

/**
 * One scale row (packages/bench/src/scale.ts): one caller process calling
 * `devices` mqrpc servers, each through a transport of its own.
 */
export interface ScaleRow {
  devices: number;
  /** Child processes hosting the device servers. */
  serverProcesses: number;
  /** Calls in flight at once. */
  concurrency: number;
  /** Wall time of every device's first call, transports created on the way, ms. */
  firstCallsMs: number;
  /** Wall time of a second call to every device, ms. */
  secondCallsMs: number;
  /** Calls of both passes that failed, and the first failure. */
  failedCalls: number;
  firstError?: string;
  /** The caller's RSS with the devices' transports open minus before, both after a full GC, bytes. */
  rssGrowthBytes: number;
  /**
   * {@link rssGrowthBytes} without the growth of V8's young generation,
   * which is empty after the GC but kept at the size the allocation rate
   * grew it to (up to 32 MiB): the memory the devices hold, bytes.
   */
  retainedGrowthBytes: number;
  /** The same for V8 heap in use plus external memory, bytes. */
  heapGrowthBytes: number;
  /** TCP connections the caller process holds to the broker (its /proc). */
  clientConnections?: number;
  clientConnectionsAfterClose?: number;
  /** Connected clients and subscriptions the broker gained (Mosquitto $SYS); absent elsewhere. */
  brokerConnections?: number;
  brokerSubscriptions?: number;
  /** What the broker still had above the baseline once every transport was closed. */
  brokerConnectionsAfterClose?: number;
  brokerSubscriptionsAfterClose?: number;
}

/** Ratios of the largest row to the smallest (1,000 vs 100 devices); undefined with fewer than two rows. */
export function scaleGrowth(rows: readonly ScaleRow[]):
  | {
      from: number;
      to: number;
      firstCalls: number;
      secondCalls: number;
      rss: number;
      retained: number | undefined;
      connections: number | undefined;
      subscriptions: number | undefined;
    }
  | undefined {
  const sorted = [...rows].sort((a, b) => a.devices - b.devices);
  const small = sorted[0];
  const large = sorted[sorted.length - 1];
  if (small === undefined || large === undefined || small === large) return undefined;
  const ratio = (a: number | undefined, b: number | undefined) =>
    a === undefined || b === undefined || a === 0 ? undefined : b / a;
  return {
    from: small.devices,
    to: large.devices,
    firstCalls: large.firstCallsMs / small.firstCallsMs,
    secondCalls: large.secondCallsMs / small.secondCallsMs,
    rss: large.rssGrowthBytes / small.rssGrowthBytes,
    retained: ratio(small.retainedGrowthBytes, large.retainedGrowthBytes),
    connections: ratio(small.clientConnections, large.clientConnections),
    subscriptions: ratio(small.brokerSubscriptions, large.brokerSubscriptions),
  };
}

interface Row {
  broker: string;
  measure: string;
  value: number;
  target: string;
  /** Undefined for a reference row, which has no target of its own. */
  met: boolean | undefined;
}

const LARGE = 16 * 1024 * 1024;

/** The ratios the targets are stated in, one row each. */
export function ratios(results: Results): Row[] {
  const rows: Row[] = [];
  for (const b of results.brokers) {
    const u = (name: string) => b.unary.find((x) => x.contender === name);
    const s = (name: string) => b.stream.find((x) => x.contender.startsWith(name));
    const mq = u(CONTENDER.mqrpc);
    const raw = u(CONTENDER.raw);
    const grpc = u(CONTENDER.grpc);
    const connect = u(CONTENDER.connect);
    const json = u(CONTENDER.json);
    const push = (measure: string, value: number, target: string, met: boolean | undefined) =>
      rows.push({ broker: b.broker, measure, value, target, met });
    if (mq && raw)
      push(
        "unary p50, mqrpc / raw ping-pong",
        mq.p50Ms / raw.p50Ms,
        "≤ 1.3",
        mq.p50Ms / raw.p50Ms <= 1.3,
      );
    if (mq && raw)
      push(
        "calls/s at 64, mqrpc / raw pairs",
        mq.callsPerSecond / raw.callsPerSecond,
        "≥ 0.6",
        mq.callsPerSecond / raw.callsPerSecond >= 0.6,
      );
    if (mq && grpc)
      push(
        "calls/s at 64, mqrpc / grpc-js",
        mq.callsPerSecond / grpc.callsPerSecond,
        "≥ 2",
        mq.callsPerSecond / grpc.callsPerSecond >= 2,
      );
    if (mq && connect)
      push(
        "calls/s at 64, mqrpc / Connect-node gRPC",
        mq.callsPerSecond / connect.callsPerSecond,
        "reference",
        undefined,
      );
    if (mq && json)
      push(
        "calls/s at 64, mqrpc / mqtt-json-rpc",
        mq.callsPerSecond / json.callsPerSecond,
        "≥ 5",
        mq.callsPerSecond / json.callsPerSecond >= 5,
      );
    // Issue 13: (b) mqrpc → gateway and (c) grpc-js → ingress → gateway against
    // (d) native mqrpc (p50) and (a) direct HTTP/2 gRPC (throughput).
    for (const [path, row, p50Target] of [
      ["(b) gateway path", u(CONTENDER.gateway), 1.5],
      ["(c) ingress path", u(CONTENDER.ingress), 2.5],
      ["(c) ingress path without schema", u(CONTENDER.ingressNoSchema), undefined],
    ] as const) {
      if (row === undefined) continue;
      if (mq) {
        const r = row.p50Ms / mq.p50Ms;
        push(
          `unary p50, ${path} / (d) native mqrpc`,
          r,
          p50Target === undefined ? "reference" : `≤ ${p50Target}`,
          p50Target === undefined ? undefined : r <= p50Target,
        );
      }
      for (const [direct, name] of [
        [grpc, "grpc-js"],
        [connect, "Connect-node"],
      ] as const) {
        if (direct === undefined) continue;
        const r = row.callsPerSecond / direct.callsPerSecond;
        const target = p50Target !== undefined;
        push(
          `calls/s at 64, ${path} / (a) ${name} direct`,
          r,
          target ? "≥ 1" : "reference",
          target ? r >= 1 : undefined,
        );
      }
      // More processes on the path: what they cost per call, and the ceiling with a core each.
      const cpu = cpuSummary(row);
      const grpcCpu = grpc === undefined ? undefined : cpuSummary(grpc);
      if (cpu && grpcCpu) {
        push(
          `CPU µs per call, all processes, ${path} / (a) grpc-js direct`,
          cpu.total / grpcCpu.total,
          "reference",
          undefined,
        );
        push(
          `CPU µs per call, busiest process, ${path} / (a) grpc-js direct`,
          cpu.busiest / grpcCpu.busiest,
          "reference",
          undefined,
        );
        if (results.cores !== undefined && grpc !== undefined) {
          // The processes on the path share the cores, and each runs on one:
          // no more calls/s than either allows, however the work is spread.
          const ceiling = Math.min((results.cores * 1e6) / cpu.total, 1e6 / cpu.busiest);
          push(
            `calls/s at 64, ceiling of ${path} on ${results.cores} cores (the lesser of cores × 10⁶ / CPU µs per call of all processes and 10⁶ / the busiest's) / (a) grpc-js direct`,
            ceiling / grpc.callsPerSecond,
            "reference",
            undefined,
          );
        }
      }
    }
    // What the hops of (b) and (c) take measured alone, added up: the p50
    // those paths cannot go under whatever the gateway and ingress do.
    const hop = u(CONTENDER.hop);
    if (mq && hop) {
      push(
        "unary p50, the upstream hop alone (node:http2 → grpc-js) / (d) native mqrpc",
        hop.p50Ms / mq.p50Ms,
        "reference",
        undefined,
      );
      push(
        "unary p50, (d) native + the upstream hop, the least (b) can take / (d) native mqrpc",
        (mq.p50Ms + hop.p50Ms) / mq.p50Ms,
        "reference",
        undefined,
      );
      if (grpc)
        push(
          "unary p50, (a) grpc-js direct + (d) native + the upstream hop, the least (c) can take / (d) native mqrpc",
          (grpc.p50Ms + mq.p50Ms + hop.p50Ms) / mq.p50Ms,
          "reference",
          undefined,
        );
    }
    const batched = s("mqrpc batched");
    const unbatched = s("mqrpc unbatched");
    const rawStream = s("raw");
    if (batched && unbatched) {
      const r = batched.messagesPerSecond / unbatched.messagesPerSecond;
      push("stream msg/s, batched / unbatched", r, "≥ 10", r >= 10);
    }
    if (batched && rawStream) {
      const r = batched.messagesPerSecond / rawStream.messagesPerSecond;
      push("stream msg/s, batched / raw publishes", r, "≥ 3", r >= 3);
    }
    const large = b.large?.find((x) => x.contender === "mqrpc");
    const rawLarge = b.large?.find((x) => x.contender !== "mqrpc");
    if (large && rawLarge) {
      const r = large.megabytesPerSecond / rawLarge.megabytesPerSecond;
      push("16 MiB MB/s, mqrpc / raw chunks", r, "≥ 0.7", r >= 0.7);
      const peak = Math.max(large.clientPeakAboveIdle ?? 0, large.serverPeakAboveIdle ?? 0) / LARGE;
      push("16 MiB peak RSS above idle / message size", peak, "≤ 4", peak <= 4);
      if (rawLarge.serverPeakAboveIdle !== undefined) {
        const rawPeak =
          Math.max(rawLarge.clientPeakAboveIdle ?? 0, rawLarge.serverPeakAboveIdle) / LARGE;
        push(
          "16 MiB peak RSS above idle / message size, raw MQTT.js",
          rawPeak,
          "reference",
          undefined,
        );
      }
    }
    // Issue 14: the net-bridge against raw MQTT.js, loopback TCP and native mqrpc.
    const bulk = (name: string) => b.bridge?.bulk.find((x) => x.contender === name);
    const bridgeBulk = bulk(CONTENDER.bridgeBulk);
    const rawBulk = bulk(CONTENDER.rawBulk);
    const tcpBulk = bulk(CONTENDER.tcpBulk);
    if (bridgeBulk && rawBulk) {
      const r = bridgeBulk.mebibytesPerSecond / rawBulk.mebibytesPerSecond;
      push("64 MiB MiB/s, net-bridge / raw MQTT.js publishes", r, "≥ 0.7", r >= 0.7);
    }
    if (bridgeBulk && tcpBulk)
      push(
        "64 MiB MiB/s, net-bridge / loopback TCP",
        bridgeBulk.mebibytesPerSecond / tcpBulk.mebibytesPerSecond,
        "reference",
        undefined,
      );
    const bridgeGrpc = b.bridge?.unary.find((x) => x.contender === CONTENDER.bridgeGrpc);
    const bridgeNative = b.bridge?.unary.find((x) => x.contender === CONTENDER.mqrpc);
    if (bridgeGrpc && bridgeNative)
      push(
        "unary p50, gRPC over the net-bridge / native mqrpc",
        bridgeGrpc.p50Ms / bridgeNative.p50Ms,
        "reference",
        undefined,
      );
    // A row whose calls failed measured less than it says: never met.
    const scaleMeasure = (row: ScaleRow, what: string) =>
      `scale, ${row.devices.toLocaleString("en-US")} devices: ${what}${row.failedCalls > 0 ? ` (${row.failedCalls} calls failed)` : ""}`;
    for (const scale of b.scale ?? []) {
      const connections = scale.clientConnections ?? scale.brokerConnections;
      if (connections !== undefined)
        push(
          scaleMeasure(scale, "broker connections held by the caller"),
          connections,
          "1",
          connections <= 1 && scale.failedCalls === 0,
        );
    }
    const largest = [...(b.scale ?? [])].sort((x, y) => y.devices - x.devices)[0];
    if (largest !== undefined) {
      const kib = largest.retainedGrowthBytes / largest.devices / 1024;
      push(
        scaleMeasure(largest, "caller RSS growth per device (young generation aside), KiB"),
        kib,
        "≤ 10",
        kib <= 10 && largest.failedCalls === 0,
      );
      push(
        scaleMeasure(largest, "caller RSS growth per device, all of it, KiB"),
        largest.rssGrowthBytes / largest.devices / 1024,
        "reference",
        undefined,
      );
    }
  }
  // A selective run (--only) that skipped the wire measurement has nothing to show.
  if (results.wire.requestOverheadBytes > 0)
    rows.push({
      broker: "any",
      measure: "frame overhead bytes, request / response",
      value: Math.max(results.wire.requestOverheadBytes, results.wire.responseOverheadBytes),
      target: "≤ 24",
      met: Math.max(results.wire.requestOverheadBytes, results.wire.responseOverheadBytes) <= 24,
    });
  return rows;
}

function fmt(n: number): string {
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

function svg(results: Results): string {
  // One bar group per broker: calls/s at concurrency 64 per contender.
  const bars = results.brokers.flatMap((b) =>
    b.unary.map((u) => ({ label: `${b.broker}: ${u.contender}`, value: u.callsPerSecond })),
  );
  const max = Math.max(1, ...bars.map((b) => b.value));
  const rowH = 22;
  const width = 760;
  const left = 300;
  const height = bars.length * rowH + 50;
  const rows = bars
    .map((b, i) => {
      const y = 40 + i * rowH;
      const w = Math.max(1, ((width - left - 80) * b.value) / max);
      return `<text x="${left - 8}" y="${y + 14}" text-anchor="end" font-size="12">${escapeXml(b.label)}</text><rect x="${left}" y="${y + 2}" width="${w.toFixed(1)}" height="${rowH - 6}" fill="${b.label.includes("mqrpc") || b.label.includes("gateway") ? "#2b6cb0" : "#a0aec0"}"/><text x="${(left + w + 6).toFixed(1)}" y="${y + 14}" font-size="12">${fmt(b.value)}</text>`;
    })
    .join("\n");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" role="img">
<title>Unary calls per second at concurrency 64</title>
<text x="10" y="22" font-size="15" font-weight="bold">Unary 32-byte echo, calls per second at concurrency 64 (higher is better)</text>
${rows}
</svg>
`;
}

/** The scale rows of one broker and their growth from the fewest devices to the most. */
function scaleTable(rows: readonly ScaleRow[]): string[] {
  if (rows.length === 0) return [];
  const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
  const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const count = (n: number | undefined) => (n === undefined ? "—" : String(n));
  const lines = [
    "",
    "| devices called | first calls | second calls | failed calls | caller RSS growth | young generation aside | per device | heap + external growth | connections held | subscriptions gained | left after close: connections / subscriptions |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ...rows.map(
      (r) =>
        `| ${r.devices.toLocaleString("en-US")} | ${seconds(r.firstCallsMs)} | ${seconds(r.secondCallsMs)} | ${r.failedCalls} | ${mib(r.rssGrowthBytes)} | ${mib(r.retainedGrowthBytes)} | ${(r.retainedGrowthBytes / r.devices / 1024).toFixed(1)} KiB | ${mib(r.heapGrowthBytes)} | ${count(r.clientConnections ?? r.brokerConnections)} | ${count(r.brokerSubscriptions)} | ${count(r.clientConnectionsAfterClose ?? r.brokerConnectionsAfterClose)} / ${count(r.brokerSubscriptionsAfterClose)} |`,
    ),
  ];
  const growth = scaleGrowth(rows);
  if (growth !== undefined) {
    const times = (x: number | undefined) => (x === undefined ? "—" : `×${fmt(x)}`);
    lines.push(
      `| growth ${growth.to.toLocaleString("en-US")} / ${growth.from.toLocaleString("en-US")} | ${times(growth.firstCalls)} | ${times(growth.secondCalls)} | | ${times(growth.rss)} | ${times(growth.retained)} | | | ${times(growth.connections)} | ${times(growth.subscriptions)} | |`,
    );
  }
  return lines;
}

/** CPU µs per call by process of the unary rows that have it: client, broker, the rest by role. */
function cpuTable(rows: readonly UnaryRow[]): string[] {
  const measured = rows.filter((u) => cpuSummary(u) !== undefined);
  if (measured.length === 0) return [];
  const micros = (n: number | undefined) => (n === undefined ? "—" : n.toFixed(0));
  const of = (u: UnaryRow, role: string) =>
    u.cpuPerCall?.find((p) => p.role === role)?.microsPerCall;
  return [
    "",
    "| CPU µs per call, throughput rounds | client | broker | other processes | total | busiest |",
    "| --- | --- | --- | --- | --- | --- |",
    ...measured.map((u) => {
      const others = (u.cpuPerCall ?? [])
        .filter((p) => p.role !== "client" && p.role !== "broker")
        .map((p) => `${p.role} ${micros(p.microsPerCall)}`)
        .join(", ");
      const summary = cpuSummary(u);
      return `| ${u.contender} | ${micros(of(u, "client"))} | ${micros(of(u, "broker"))} | ${others} | ${micros(summary?.total)} | ${micros(summary?.busiest)} |`;
    }),
  ];
}

/** The net-bridge rows of one broker: the 64 MiB transfers, then gRPC over the bridge next to native mqrpc. */
function bridgeTables(bridge: Results["brokers"][number]["bridge"]): string[] {
  if (bridge === undefined) return [];
  return [
    "",
    "| 64 MiB transfer | MiB/s |",
    "| --- | --- |",
    ...bridge.bulk.map((r) => `| ${r.contender} | ${r.mebibytesPerSecond.toFixed(1)} |`),
    "",
    "| unary over the net-bridge device | p50 ms | p99 ms | calls/s at 64 |",
    "| --- | --- | --- | --- |",
    ...bridge.unary.map(
      (u) =>
        `| ${u.contender} | ${u.p50Ms.toFixed(3)} | ${u.p99Ms.toFixed(3)} | ${u.callsPerSecond.toFixed(0)} |`,
    ),
    ...cpuTable(bridge.unary),
  ];
}

function escapeXml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** The printed table, the SVG, and the Markdown page. */
export function renderReport(results: Results): { table: string; svg: string; markdown: string } {
  const rows = ratios(results);
  const table = [
    "| broker | measure | ratio | target | met |",
    "| --- | --- | --- | --- | --- |",
    ...rows.map(
      (r) =>
        `| ${r.broker} | ${r.measure} | ${fmt(r.value)} | ${r.target} | ${r.met === undefined ? "—" : r.met ? "yes" : "no"} |`,
    ),
  ].join("\n");
  const raw = results.brokers
    .map((b) =>
      [
        `### ${b.broker}`,
        "",
        "| contender | p50 ms | p99 ms | calls/s at 64 |",
        "| --- | --- | --- | --- |",
        ...b.unary.map(
          (u) =>
            `| ${u.contender} | ${u.p50Ms.toFixed(3)} | ${u.p99Ms.toFixed(3)} | ${u.callsPerSecond.toFixed(0)} |`,
        ),
        ...cpuTable(b.unary),
        "",
        "| stream of 100,000 × 64 B | messages/s |",
        "| --- | --- |",
        ...b.stream.map((s) => `| ${s.contender} | ${s.messagesPerSecond.toFixed(0)} |`),
        "",
        "| 16 MiB request | MB/s | client peak RSS above idle | server peak RSS above idle |",
        "| --- | --- | --- | --- |",
        ...(b.large ?? []).map(
          (l) =>
            `| ${l.contender} | ${l.megabytesPerSecond.toFixed(1)} | ${l.clientPeakAboveIdle === undefined ? "" : `${(l.clientPeakAboveIdle / 2 ** 20).toFixed(1)} MiB`} | ${l.serverPeakAboveIdle === undefined ? "" : `${(l.serverPeakAboveIdle / 2 ** 20).toFixed(1)} MiB`} |`,
        ),
        ...scaleTable(b.scale ?? []),
        ...bridgeTables(b.bridge),
      ].join("\n"),
    )
    .join("\n\n");
  const markdown = `# Benchmarks

Generated by \`${results.command}\` (packages/bench) on ${results.date.slice(0, 10)}, in ${fmt(results.durationSeconds ?? 0)} s.
Machine: ${results.machine}. These machines are shared and noisy: read the
ratios, which compare contenders measured side by side in one run on the same
broker, not the absolute numbers.

Layout, the same for every contender: the broker and the server side run in
child processes, the measuring client in the main process. The unary
contenders run side by side in interleaved rounds after a warm-up (latency:
9 rounds of 800 sequential calls, mqtt-json-rpc 40; throughput: 3 rounds
of 1.5 s with 64 callers), so that load from other tenants hits them alike;
each number is the median of its rounds. Streams and the 16 MiB request:
medians of 3 rounds after a warm-up. The raw MQTT.js floor is a QoS 1
ping-pong between two clients; @grpc/grpc-js uses @grpc/proto-loader over
HTTP/2 loopback; mqtt-json-rpc runs as its README shows (QoS 2 requests).
Connect-node is the other Node HTTP/2 gRPC peer: its gRPC client
(\`createGrpcTransport\`) calling \`connectNodeAdapter\` on
\`http2.createServer\`.
The 16 MiB rows also show the peak RSS of a raw MQTT.js publisher and
receiver moving the same bytes, for reference.
The gateway rows (issue 13) are unary contenders too, measured in the same
interleaved rounds: (b) an mqrpc client → MQTT → \`createGrpcGateway\` →
the grpc-js server of the grpc-js row, and (c) a grpc-js client →
\`createGrpcIngress\` → MQTT → gateway → that server, with the ingress
given the schema (unary calls travel as mqrpc unary calls) and without it
(as bidi streams); each hop in a process of its own. Targets: (b) p50 ≤
1.5 × and (c) p50 ≤ 2.5 × (d) native mqrpc, (b) and (c) calls/s ≥ (a) the
direct HTTP/2 calls, shown against grpc-js and Connect-node. Two kinds of
reference rows say what those targets can be on the machine of the run.
The floor: the gateway's upstream hop measured alone (a bare
\`node:http2\` client, no gRPC library, calling that grpc-js server, in
the same rounds); (b) makes the MQTT round trip of (d) and this hop, so its
p50 is at least their sum, and (c) adds (a)'s grpc-js round trip to the
ingress. The ceiling: the processes of a path share the machine's cores,
so its calls/s cannot pass the lesser of cores × 10⁶ / its CPU µs per call
of all processes and 10⁶ / those of its busiest process.
CPU per call: in the throughput rounds, the CPU time (user + system, every
thread; \`/proc/<pid>/stat\`, \`process.cpuUsage()\` for the measuring
process) each process of a unary contender spent, divided by the calls
completed, median of the rounds, in µs: the measuring client, the broker
(listed for every contender, near 0 for those that do not use it) and the
processes the contender started. It holds up better than calls/s on a
noisy machine. With fewer cores than processes, throughput is bounded by
the total; with a core for each, by the busiest process. The gateway rows
run 4 or 5 processes where (a) grpc-js direct runs 2, so both are also
shown against (a), for reference.
The net-bridge rows (issue 14): 64 MiB written in 64 KiB writes to a
bridged socket (\`connectMqtt\` → \`listenMqtt\`) until the device side has
read it all, next to QoS 1 MQTT.js publishes of the same bytes (the
bridge's message size, 126 KiB, all at once, until the subscriber has them
all) and to loopback TCP, medians of 3 rounds after a warm-up; and a
grpc-js server behind \`listenMqtt\` called by a Connect-node gRPC client
through \`connectMqtt\`, next to native mqrpc to the same device process,
measured like the unary rows.
The scale rows: one caller process calls N devices (N = 100 and 1,000),
each an mqrpc server with its own server id, spread over
4 child processes; the caller makes one transport per device
(\`createMqttTransport({ mqtt: url, serverId })\`, the natural user code)
and a client on it, and calls every device once (transport created on the
way), then once more, 100 calls in flight at once. The caller is a process
of its own, so its RSS growth (after a full GC, before the first device
and with every device's transport open) is what the devices cost; a
warm-up call to one device before the baseline keeps the loaded code out
of it. The per-device target leaves out the growth of V8's young
generation: empty after the GC, it stays at the size the allocation rate
of the first calls grew it to (up to 2 × 16 MiB, whatever the number of
devices), which says how busy the process was, not what it holds; the
RSS with all of it is shown for reference. For 100 devices that growth is
mostly room V8's old space already had, so its growth ratio says little;
read the 1,000-device row. Connections held are the caller's TCP
connections to the broker (its /proc); on Mosquitto the broker's own
counts (\`$SYS\`) give the connections and subscriptions gained, and what
was left once every transport was closed.
Brokers: embedded Aedes, and Mosquitto 2 with \`set_tcp_nodelay true\`
(and \`sys_interval 1\` for the scale rows' counts) when installed.

## Targets

${table}

About the peak RSS rows: RSS counts garbage that V8 has not collected yet.
Receiving a 16 MiB message as 128 KiB publishes, MQTT.js leaves every byte
behind twice (the socket reads, and its copy of each publish that spans
reads), and V8 collects such off-heap garbage only after external memory
has grown by tens of MiB. The raw MQTT.js receiver, which keeps nothing,
shows that slack alone; mqrpc's server holds the message it hands to the
handler (1× the size) on top of it. A diagnostic run with a forced GC every
5 ms in the server (2026-11-22, \`node --expose-gc\`) kept its peak at
1.2–1.4× the message size: what mqrpc itself retains.

Frame overhead (excluding payload and topic): request ${results.wire.requestOverheadBytes} bytes, response ${results.wire.responseOverheadBytes} bytes.

![calls per second](benchmarks.svg)

## Raw numbers

${raw}

Raw results: [bench-results.json](bench-results.json).
`;
  return { table, svg: svg(results), markdown };
}
