/**
 * How the rows of `npm run bench` are measured: latency one call at a time
 * (p50, p99), throughput with concurrent callers, medians of rounds after a
 * warm-up, peak RSS while something runs, unary contenders measured
 * side by side in interleaved rounds, and the CPU time per call of every
 * process their calls go through.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import type { Peer } from "./peers.js";
import { cpuSummary, type ProcessCpu, type UnaryRow } from "./report.js";

/** Rounds of a throughput or transfer measurement, after one warm-up round. */
export const ROUNDS = 3;
/** Rounds of a unary latency measurement. */
export const LATENCY_ROUNDS = 9;
/** Sequential calls per latency round, by default. */
export const LATENCY_CALLS = 800;
/** Duration of one throughput round, ms. */
export const THROUGHPUT_MS = 1500;
/** Callers in flight at once in a throughput round. */
export const CONCURRENCY = 64;

/** The median (the upper one of an even count) of `xs`. */
export const median = (xs: number[]) =>
  [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

/** The `p` quantile (0..1) of `xs`, nearest rank from below. */
export const percentile = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] as number;

/** One call of a contender; resolves when its answer arrived. */
export type Call = () => Promise<unknown>;

/** A process whose CPU time the side-by-side throughput rounds count. */
export interface MeasuredProcess {
  /** What it does in the measurement: `broker`, `gateway`, `grpc-server`... */
  readonly role: string;
  readonly pid: number;
}

/** A contender's client side, with its server side started. */
export interface Pair {
  readonly call: Call;
  /** The processes the pair started (its server side), by role. */
  readonly processes?: readonly MeasuredProcess[];
  /** Closes the client and stops the processes the pair started. */
  close(): Promise<void>;
}

/** One latency round: `calls` calls one after another; p50 and p99 in ms. */
export async function latencyRound(
  call: Call,
  calls: number,
): Promise<{ p50: number; p99: number }> {
  const samples: number[] = [];
  for (let i = 0; i < calls; i++) {
    const t = performance.now();
    await call();
    samples.push(performance.now() - t);
  }
  return { p50: percentile(samples, 0.5), p99: percentile(samples, 0.99) };
}

/** One throughput round: calls completed with `concurrency` callers for THROUGHPUT_MS, and the seconds it took. */
async function countedThroughputRound(
  call: Call,
  concurrency = CONCURRENCY,
): Promise<{ calls: number; seconds: number }> {
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
  return { calls: done, seconds: (performance.now() - t) / 1000 };
}

/** One throughput round: calls per second with `concurrency` callers for THROUGHPUT_MS. */
export async function throughputRound(call: Call, concurrency = CONCURRENCY): Promise<number> {
  const { calls, seconds } = await countedThroughputRound(call, concurrency);
  return calls / seconds;
}

let clockTicksPerSecond: number | undefined;

/** The unit of utime and stime in /proc/<pid>/stat (`getconf CLK_TCK`, 100 nearly everywhere). */
function clockTicks(): number {
  clockTicksPerSecond ??= Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }));
  return clockTicksPerSecond;
}

/**
 * The CPU time (user + system, every thread) process `pid` has used so far,
 * µs: this process's from process.cpuUsage(), another's from
 * /proc/<pid>/stat (clock tick resolution).
 */
export function cpuMicros(pid: number): number {
  if (pid === process.pid) {
    const usage = process.cpuUsage();
    return usage.user + usage.system;
  }
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The fields after the command name, which is in parentheses and may hold
  // spaces: the first is field 3 (state), so utime (14) and stime (15) are 11 and 12.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / clockTicks();
}

/** Runs `run` once to warm up, then ROUNDS times; the median of its results. */
export async function rounds(run: () => Promise<number>): Promise<number> {
  await run();
  const xs: number[] = [];
  for (let r = 0; r < ROUNDS; r++) xs.push(await run());
  return median(xs);
}

/**
 * Runs `run` while sampling every 5 ms the RSS of this process and of
 * `other`; returns its result and both peaks above their idle values.
 */
export async function peakRss<T>(
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

/** A unary contender to measure: its row name, calls per latency round, and how to start it. */
export interface UnaryContender {
  readonly name: string;
  readonly calls: number;
  make(): Promise<Pair>;
}

/**
 * Starts the contenders one after another, then measures them side by side
 * in interleaved rounds (a, b, c, a, b, c, ...) so that a change of load on
 * a shared machine hits every contender alike instead of skewing the
 * ratios: a warm-up (up to 300 calls and one throughput round), then
 * LATENCY_ROUNDS latency rounds and ROUNDS throughput rounds at
 * CONCURRENCY. Each number is the median of its rounds. The throughput
 * rounds also measure the CPU time per call of every process a contender's
 * calls go through: this one (`client`), the `shared` ones (the broker...)
 * and those its pair started. A contender whose call fails drops out
 * (printed, no row); every pair is closed at the end.
 */
export async function measureSideBySide(
  contenders: readonly UnaryContender[],
  shared: readonly MeasuredProcess[] = [],
): Promise<UnaryRow[]> {
  const started: Array<{
    name: string;
    calls: number;
    pair: Pair;
    processes: readonly MeasuredProcess[];
    p50s: number[];
    p99s: number[];
    rates: number[];
    /** Per throughput round, CPU µs per call of each of `processes`. */
    cpuRounds: number[][];
    failed?: string;
  }> = [];
  try {
    for (const c of contenders) {
      const pair = await c.make();
      started.push({
        name: c.name,
        calls: c.calls,
        pair,
        processes: [{ role: "client", pid: process.pid }, ...shared, ...(pair.processes ?? [])],
        p50s: [],
        p99s: [],
        rates: [],
        cpuRounds: [],
      });
    }
  } catch (e) {
    for (const c of started) await c.pair.close();
    throw e;
  }
  const each = async (step: (c: (typeof started)[number]) => Promise<void>) => {
    for (const c of started) {
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
  clockTicks();
  for (let r = 0; r < ROUNDS; r++) {
    await each(async (c) => {
      const before = c.processes.map((p) => cpuMicros(p.pid));
      const { calls, seconds } = await countedThroughputRound(c.pair.call);
      const after = c.processes.map((p) => cpuMicros(p.pid));
      c.rates.push(calls / seconds);
      c.cpuRounds.push(before.map((b, i) => ((after[i] as number) - b) / calls));
    });
  }
  const rows: UnaryRow[] = [];
  for (const c of started) {
    await c.pair.close();
    if (c.failed !== undefined) {
      console.log(`  ${c.name}: failed: ${c.failed}`);
      continue;
    }
    const cpuPerCall: ProcessCpu[] = c.processes.map((p, i) => ({
      role: p.role,
      microsPerCall: median(c.cpuRounds.map((round) => round[i] as number)),
    }));
    const row: UnaryRow = {
      contender: c.name,
      p50Ms: median(c.p50s),
      p99Ms: median(c.p99s),
      callsPerSecond: median(c.rates),
      cpuPerCall,
    };
    rows.push(row);
    const summary = cpuSummary(row);
    const micros = cpuPerCall.map((p) => `${p.role} ${p.microsPerCall.toFixed(0)}`).join(", ");
    console.log(
      `  ${c.name}: p50 ${row.p50Ms.toFixed(3)} ms, p99 ${row.p99Ms.toFixed(3)} ms, ${row.callsPerSecond.toFixed(0)} calls/s at ${CONCURRENCY}; cpu/call µs: ${micros}; total ${summary?.total.toFixed(0)}; busiest ${summary?.busiest.toFixed(0)}`,
    );
  }
  return rows;
}
