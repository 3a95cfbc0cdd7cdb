/**
 * A gateway in its own process, so that a test can kill it (SIGKILL: no
 * OFFLINE announcement, as a crashed device) and measure its memory alone.
 * Started by gateway-process.ts as `node --import tsx gateway-child.ts <config JSON>`.
 *
 * Stdout: JSON lines, {"event":"ready","pid":N} once the gateway is
 * announced; {"event":"memory",...} answering `memory` on stdin. The
 * process samples its memory every 5 ms and keeps the peaks, and every
 * second after a full garbage collection (run with --expose-gc) keeps the
 * peak of what stays reachable: buffered messages show there, garbage
 * does not. `reset` on stdin collects garbage and starts new peaks from
 * the current values (answered with a `memory` line too). With config
 * `deferred`, it loads, prints {"event":"loaded"} and starts the gateway
 * on `start`. `close` closes the gateway gracefully and exits; the end of
 * stdin (the parent is gone) exits at once.
 */
import { createGrpcGateway, type GrpcUpstreamOptions } from "../../src/index.js";

/** The one argument, JSON-encoded. */
export interface GatewayChildConfig {
  readonly url: string;
  readonly protocolVersion: 4 | 5;
  readonly serverId: string;
  readonly upstreams: readonly GrpcUpstreamOptions[];
  /** Load, say `loaded`, and start the gateway on `start` (the process start is paid early). */
  readonly deferred?: boolean;
}

/** Memory figures in bytes, from `process.memoryUsage()`. */
export interface MemorySample {
  readonly rss: number;
  readonly heapUsed: number;
  /** Memory of ArrayBuffers and Buffers (outside the JS heap). */
  readonly arrayBuffers: number;
}

/** One line of the child's stdout. */
export type GatewayChildEvent =
  | { readonly event: "ready"; readonly pid: number }
  | {
      readonly event: "memory";
      readonly now: MemorySample;
      /** The highest value of each figure since start or the last `reset`. */
      readonly peak: MemorySample;
      /** heapUsed + arrayBuffers at their highest together. */
      readonly peakHeapAndBuffers: number;
      /** heapUsed + arrayBuffers right after a full collection, at its highest. */
      readonly peakRetained: number;
      /** heapUsed + arrayBuffers right after a full collection, now. */
      readonly retained: number;
    }
  | { readonly event: "loaded" }
  | { readonly event: "closed" };

function emit(e: GatewayChildEvent): void {
  process.stdout.write(`${JSON.stringify(e)}\n`);
}

function sample(): MemorySample {
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, arrayBuffers: m.arrayBuffers };
}

let peak = sample();
let peakHeapAndBuffers = peak.heapUsed + peak.arrayBuffers;
function record(): MemorySample {
  const now = sample();
  peak = {
    rss: Math.max(peak.rss, now.rss),
    heapUsed: Math.max(peak.heapUsed, now.heapUsed),
    arrayBuffers: Math.max(peak.arrayBuffers, now.arrayBuffers),
  };
  peakHeapAndBuffers = Math.max(peakHeapAndBuffers, now.heapUsed + now.arrayBuffers);
  return now;
}
setInterval(record, 5).unref();

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with --expose-gc");
function collect(): number {
  gc?.();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}
let peakRetained = collect();
setInterval(() => {
  peakRetained = Math.max(peakRetained, collect());
}, 1000).unref();

let gateway: Awaited<ReturnType<typeof createGrpcGateway>> | undefined;
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk: string) => {
  input += chunk;
  for (let nl = input.indexOf("\n"); nl >= 0; nl = input.indexOf("\n")) {
    const line = input.slice(0, nl);
    input = input.slice(nl + 1);
    if (line === "reset") {
      peakRetained = collect();
      peak = sample();
      peakHeapAndBuffers = peak.heapUsed + peak.arrayBuffers;
    }
    if (line === "memory" || line === "reset") {
      const retained = collect();
      peakRetained = Math.max(peakRetained, retained);
      const now = record();
      emit({ event: "memory", now, peak, peakHeapAndBuffers, peakRetained, retained });
    } else if (line === "start") {
      startGateway?.();
    } else if (line === "close") {
      void (gateway?.close() ?? Promise.resolve()).then(() => {
        emit({ event: "closed" });
        process.exit(0);
      });
    }
  }
});
process.stdin.on("end", () => process.exit(0));

let startGateway: (() => void) | undefined;

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? "{}") as GatewayChildConfig;
  if (config.deferred === true) {
    const start = new Promise<void>((resolve) => {
      startGateway = resolve;
    });
    emit({ event: "loaded" });
    await start;
  }
  gateway = await createGrpcGateway({
    mqtt: { url: config.url, protocolVersion: config.protocolVersion, reconnectPeriod: 200 },
    serverId: config.serverId,
    upstreams: config.upstreams,
  });
  emit({ event: "ready", pid: process.pid });
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
