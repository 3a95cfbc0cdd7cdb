/**
 * The scale rows of `npm run bench`: one process calling N devices (N = 100
 * and 1,000), the way a fleet back end does, with one transport per device
 * (`createMqttTransport({ mqtt: url, serverId })`) and a client on each.
 * The devices are mqrpc servers, one per server id, spread over a few child
 * processes; the caller is a child process of its own, so that its memory
 * is what the devices cost it and nothing else. Measured: wall time of
 * every device's first call (which includes creating its transport) and of
 * a second call to each, the caller's RSS growth after a full GC, the TCP
 * connections it holds to the broker (counted in its /proc), and the
 * connections and subscriptions the broker gained (Mosquitto's `$SYS`).
 */
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { type BrokerCounts, MosquittoStatistics } from "./mosquitto-statistics.js";
import { type Results, type ScaleRow, scaleGrowth } from "./report.js";
import type { CallPass, Footprint, ScaleCommand, ScalePeerConfig } from "./scale-peer.js";

/** Devices called, one row each. */
export const SCALE_DEVICES = [100, 1000] as const;
/** Child processes the device servers are spread over. */
export const SCALE_SERVER_PROCESSES = 4;
/** Calls (and transports being created) in flight at once in the caller. */
export const SCALE_CONCURRENCY = 100;
const CALL_TIMEOUT_MS = 30_000;
const REQUEST_TIMEOUT_MS = 120_000;

/** A forked scale-peer.ts, driven by requests over IPC; see there. */
class ScaleProcess {
  private nextId = 0;
  private readonly waiting = new Map<
    number,
    { resolve(v: unknown): void; reject(e: Error): void }
  >();
  private exited = false;

  private constructor(
    private readonly child: ChildProcess,
    private readonly role: string,
  ) {
    child.on("message", (m) => {
      const reply = m as { id?: number; result?: unknown; error?: string };
      if (reply.id === undefined) return;
      const waiter = this.waiting.get(reply.id);
      this.waiting.delete(reply.id);
      if (reply.error !== undefined) waiter?.reject(new Error(`${role}: ${reply.error}`));
      else waiter?.resolve(reply.result);
    });
    child.once("exit", (code, signal) => {
      this.exited = true;
      for (const waiter of this.waiting.values())
        waiter.reject(new Error(`${role} exited (${signal ?? code})`));
      this.waiting.clear();
    });
  }

  /** Forks a scale peer and resolves once it is ready (its servers all online). */
  static start(role: "servers" | "client", config: ScalePeerConfig): Promise<ScaleProcess> {
    const child = fork(
      fileURLToPath(new URL("./scale-peer.ts", import.meta.url)),
      [role, JSON.stringify(config)],
      { execArgv: ["--import", "tsx"], stdio: ["ignore", "inherit", "inherit", "ipc"] },
    );
    const peer = new ScaleProcess(child, role);
    return new Promise<ScaleProcess>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`${role} not ready within ${REQUEST_TIMEOUT_MS} ms`));
        void peer.stop();
      }, REQUEST_TIMEOUT_MS);
      child.once("error", reject);
      child.once("exit", (code) => reject(new Error(`${role} exited with ${code}`)));
      child.on("message", (m) => {
        if ((m as { ready?: boolean }).ready) {
          clearTimeout(timer);
          resolve(peer);
        }
      });
    });
  }

  request<T>(command: ScaleCommand): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(
          new Error(`${this.role}: no answer to ${command.command} in ${REQUEST_TIMEOUT_MS} ms`),
        );
      }, REQUEST_TIMEOUT_MS);
      this.waiting.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.child.send({ id, ...command }, (e) => {
        if (e !== null) this.waiting.get(id)?.reject(e);
      });
    });
  }

  /** Asks it to close everything and exit; SIGKILL after 15 s. Never rejects. */
  async stop(): Promise<void> {
    if (this.exited || this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
    const kill = setTimeout(() => this.child.kill("SIGKILL"), 15_000);
    this.child.send("stop", (e) => {
      if (e !== null) this.child.kill("SIGKILL");
    });
    await exited;
    clearTimeout(kill);
  }
}

/** `items` in `parts` slices of nearly equal length. */
function split<T>(items: readonly T[], parts: number): T[][] {
  const size = Math.ceil(items.length / parts);
  return Array.from({ length: parts }, (_, i) => items.slice(i * size, (i + 1) * size)).filter(
    (slice) => slice.length > 0,
  );
}

/** One row: `devices` servers in child processes, called by a fresh caller process. */
async function scaleRun(
  url: string,
  devices: number,
  statistics: MosquittoStatistics | undefined,
): Promise<ScaleRow> {
  const serverIds = Array.from({ length: devices }, (_, i) => `fleet-${devices}-${i}`);
  const processes: ScaleProcess[] = [];
  try {
    const hosts = await Promise.allSettled(
      split(serverIds, SCALE_SERVER_PROCESSES).map((slice) =>
        ScaleProcess.start("servers", { url, serverIds: slice }),
      ),
    );
    for (const host of hosts) if (host.status === "fulfilled") processes.push(host.value);
    for (const host of hosts) if (host.status === "rejected") throw host.reason;
    const client = await ScaleProcess.start("client", {
      url,
      serverIds,
      concurrency: SCALE_CONCURRENCY,
      callTimeoutMs: CALL_TIMEOUT_MS,
    });
    processes.push(client);
    const baseline = await client.request<Footprint>({ command: "warm-up" });
    const brokerBefore = await statistics?.settle();
    const first = await client.request<CallPass>({ command: "first-calls" });
    const second = await client.request<CallPass>({ command: "second-calls" });
    const held = await client.request<Footprint>({ command: "footprint" });
    const brokerHeld = await statistics?.settle();
    const closed = await client.request<Footprint>({ command: "close" });
    const brokerAfter = await statistics?.settle();
    const delta = (a: BrokerCounts | undefined, b: BrokerCounts | undefined) =>
      a === undefined || b === undefined
        ? undefined
        : {
            connections: b.connectedClients - a.connectedClients,
            subscriptions: b.subscriptions - a.subscriptions,
          };
    const gained = delta(brokerBefore, brokerHeld);
    const left = delta(brokerBefore, brokerAfter);
    const firstError = first.firstError ?? second.firstError;
    return {
      devices,
      serverProcesses: processes.length - 1,
      concurrency: SCALE_CONCURRENCY,
      firstCallsMs: first.ms,
      secondCallsMs: second.ms,
      failedCalls: first.failed + second.failed,
      ...(firstError === undefined ? {} : { firstError }),
      rssGrowthBytes: held.rss - baseline.rss,
      retainedGrowthBytes:
        held.rss - held.youngGeneration - (baseline.rss - baseline.youngGeneration),
      heapGrowthBytes: held.heap - baseline.heap,
      ...(held.brokerConnections === undefined
        ? {}
        : { clientConnections: held.brokerConnections }),
      ...(closed.brokerConnections === undefined
        ? {}
        : { clientConnectionsAfterClose: closed.brokerConnections }),
      ...(gained === undefined
        ? {}
        : { brokerConnections: gained.connections, brokerSubscriptions: gained.subscriptions }),
      ...(left === undefined
        ? {}
        : {
            brokerConnectionsAfterClose: left.connections,
            brokerSubscriptionsAfterClose: left.subscriptions,
          }),
    };
  } finally {
    await Promise.all(processes.map((p) => p.stop()));
  }
}

/**
 * The scale rows on one broker, appended to `results.scale`. `$SYS`
 * counts only on Mosquitto (which the bench starts with `sys_interval 1`).
 */
export async function scaleScenarios(
  broker: { name: string; url: string },
  results: Results["brokers"][number],
): Promise<void> {
  const statistics =
    broker.name === "mosquitto" ? await MosquittoStatistics.watch(broker.url) : undefined;
  try {
    results.scale = results.scale ?? [];
    for (const devices of SCALE_DEVICES) {
      const started = performance.now();
      const row = await scaleRun(broker.url, devices, statistics);
      results.scale.push(row);
      const kib = (n: number) => (n / 1024).toFixed(1);
      console.log(
        `  scale ${devices} devices: first calls ${(row.firstCallsMs / 1000).toFixed(2)} s, second ${(row.secondCallsMs / 1000).toFixed(2)} s, ${row.failedCalls} failed${row.firstError === undefined ? "" : ` (${row.firstError})`}; client RSS +${(row.rssGrowthBytes / 2 ** 20).toFixed(1)} MiB, without young generation +${(row.retainedGrowthBytes / 2 ** 20).toFixed(1)} MiB (${kib(row.retainedGrowthBytes / devices)} KiB/device), heap +${(row.heapGrowthBytes / 2 ** 20).toFixed(1)} MiB; connections ${row.clientConnections ?? "?"} (broker +${row.brokerConnections ?? "?"}), subscriptions +${row.brokerSubscriptions ?? "?"}; after close: connections ${row.clientConnectionsAfterClose ?? "?"} (broker ${row.brokerConnectionsAfterClose ?? "?"}), subscriptions ${row.brokerSubscriptionsAfterClose ?? "?"}; row took ${((performance.now() - started) / 1000).toFixed(1)} s`,
      );
    }
    const growth = scaleGrowth(results.scale);
    if (growth !== undefined)
      console.log(
        `  scale growth ${growth.from} → ${growth.to} devices: first calls ×${growth.firstCalls.toFixed(1)}, second ×${growth.secondCalls.toFixed(1)}, RSS ×${growth.rss.toFixed(1)} (young generation aside ×${growth.retained?.toFixed(1) ?? "?"}), connections ×${growth.connections?.toFixed(1) ?? "?"}, subscriptions ×${growth.subscriptions?.toFixed(1) ?? "?"}`,
      );
  } finally {
    await statistics?.close();
  }
}
