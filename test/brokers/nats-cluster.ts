/**
 * A three-node NATS cluster in MQTT mode, started by the tests on free
 * ports with generated config: the nodes are clustered by routes (each lists
 * all three), every node runs JetStream with a store dir of its own in one
 * temp dir, and every node has an MQTT listener. NATS keeps MQTT sessions,
 * QoS 1 messages and retained messages in JetStream streams; with
 * `stream_replicas: 3` they are replicated to every node, so a client whose
 * node dies resumes its session on another.
 *
 * The cluster counts as up once every node's MQTT listener has accepted an
 * MQTT connection (CONNACK 0): a node takes MQTT connections only after
 * JetStream has a meta leader and the MQTT streams exist, which takes a
 * few seconds after the processes start.
 *
 * A node can be killed (SIGKILL: what a crashed node does; its clients'
 * sockets close, and no last will of theirs is published, see
 * docs/DEPLOYMENT.md) and started again on the same ports and store.
 * `stop()` stops every node and removes the temp dir.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connectAsync } from "mqtt";
import {
  type BrokerProcess,
  BrokerStartError,
  makeTempDir,
  onFreePorts,
  startBrokerProcess,
} from "./broker-process.js";
import { natsPath } from "./nats.js";

/** Ports of one node, all on 127.0.0.1. */
interface NodePorts {
  readonly client: number;
  readonly cluster: number;
  readonly mqtt: number;
}

/** One node of a {@link NatsCluster}. */
export interface NatsClusterNode {
  /** The node's server name: `a`, `b` or `c`. */
  readonly name: string;
  /** `mqtt://127.0.0.1:<mqttPort>` */
  readonly url: string;
  /** The MQTT port. */
  readonly port: number;
  /** The NATS client port. */
  readonly natsPort: number;
  /** The node's pid; -1 while it is down. */
  readonly pid: number;
  /** Whether the node's process is running. */
  readonly running: boolean;
  /** The last 16 kB the node logged (its last run's, after a kill). */
  output(): string;
  /** SIGKILL, as a crash: its clients' connections close at once. Waits for the exit. */
  kill(): Promise<void>;
  /** Starts a killed node again, on the same ports and JetStream store; resolves once it takes MQTT connections. */
  start(): Promise<void>;
}

/** A running cluster. */
export interface NatsCluster {
  /** Nodes a, b and c, in that order. */
  readonly nodes: readonly [NatsClusterNode, NatsClusterNode, NatsClusterNode];
  /** The config file of a node, as generated (for docs and debugging). */
  config(name: string): string;
  /**
   * The running node that is the JetStream meta leader, as the nodes last
   * logged it; undefined while none is. Killing it exercises the slowest
   * failover: JetStream elects a new meta leader before any node can
   * resume an MQTT session.
   */
  metaLeader(): NatsClusterNode | undefined;
  /** Stops every node (SIGTERM, SIGKILL after 5 s) and removes the temp dir. Idempotent. */
  stop(): Promise<void>;
}

/** Options of {@link startNatsCluster}. */
export interface NatsClusterOptions {
  /** More lines inside every node's `mqtt { }` block (NATS config syntax). */
  readonly mqttConfig?: string;
  /** Bound on one attempt to start the cluster, in ms (default 20,000); up to three are made. */
  readonly timeoutMs?: number;
}

const NAMES = ["a", "b", "c"] as const;

/** Starts tried before giving up (see startNatsCluster). */
const START_ATTEMPTS = 3;

/**
 * What a node logs once it knows the JetStream meta leader: before that an
 * MQTT CONNECT waits 4 s for JetStream and fails.
 */
const META_LEADER =
  /JetStream cluster new metadata leader|Self is new JetStream cluster metadata leader/;

/** Every line where a node says who leads (another node, itself, or none). */
const LEADER_LINE =
  /Self is new JetStream cluster metadata leader|JetStream cluster new (?:remote )?metadata leader|JetStream cluster no metadata leader/g;

/**
 * The config of one node. The same lines as in docs/DEPLOYMENT.md ("NATS
 * cluster"), with ports and paths filled in.
 */
export function natsClusterNodeConfig(
  name: string,
  ports: NodePorts,
  routes: readonly number[],
  storeDir: string,
  mqttConfig = "",
): string {
  return [
    `server_name: ${name}`,
    `listen: 127.0.0.1:${ports.client}`,
    "cluster {",
    "  name: mqrpc",
    `  listen: 127.0.0.1:${ports.cluster}`,
    `  routes: [${routes.map((p) => `nats-route://127.0.0.1:${p}`).join(", ")}]`,
    "}",
    `jetstream { store_dir: ${JSON.stringify(storeDir)} }`,
    "mqtt {",
    `  listen: 127.0.0.1:${ports.mqtt}`,
    // Sessions, QoS 1 messages and retained messages on every node, so any
    // node can take over a client whose node died (the default counts the
    // routes, which is 3 here too; said explicitly, as in the docs).
    "  stream_replicas: 3",
    mqttConfig,
    "}",
    "",
  ].join("\n");
}

/** Starts three clustered nodes; resolves once each takes MQTT connections. */
export async function startNatsCluster(options: NatsClusterOptions = {}): Promise<NatsCluster> {
  const binary = natsPath();
  if (binary === undefined) {
    throw new Error(
      "nats-server is not installed (apt-get install nats-server, or set MQRPC_NATS_SERVER)",
    );
  }
  const executable: string = binary;
  const timeoutMs = options.timeoutMs ?? 20_000;
  const root = makeTempDir("mqrpc-nats-cluster-");
  const processes = new Map<string, BrokerProcess>();
  /** Killed nodes' processes, for their output. */
  const lastRun = new Map<string, BrokerProcess>();
  const stopAll = async () => {
    const running = [...processes.values()];
    processes.clear();
    await Promise.allSettled(running.map((p) => p.stop()));
  };
  // Now and then (about one start in ten on a busy machine) a node of a
  // fresh cluster never gets its routes ("Waiting for routing to be
  // established..."): such a start is abandoned and made again on other
  // ports, in a fresh store.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(join(root.path, `attempt-${attempt}`), Date.now() + timeoutMs);
    } catch (error) {
      await stopAll();
      if (attempt >= START_ATTEMPTS) {
        root.remove();
        throw error;
      }
    }
  }

  function startOnce(dir: string, deadline: number): Promise<NatsCluster> {
    mkdirSync(dir, { recursive: true });
    return onFreePorts(9, undefined, async (free) => {
      const ports = NAMES.map((_, i) => ({
        client: free[3 * i] ?? 0,
        cluster: free[3 * i + 1] ?? 0,
        mqtt: free[3 * i + 2] ?? 0,
      }));
      const routes = ports.map((p) => p.cluster);
      const configs = new Map<string, string>();
      NAMES.forEach((name, i) => {
        const store = join(dir, name);
        mkdirSync(store, { recursive: true });
        const conf = join(dir, `${name}.conf`);
        const text = natsClusterNodeConfig(
          name,
          ports[i] as NodePorts,
          routes,
          join(store, "jetstream"),
          options.mqttConfig,
        );
        writeFileSync(conf, text);
        configs.set(name, text);
      });
      const launch = (name: string, i: number) =>
        startBrokerProcess({
          name: `nats-server ${name}`,
          binary: executable,
          args: ["-c", join(dir, `${name}.conf`)],
          ports: [ports[i]?.client ?? 0, ports[i]?.mqtt ?? 0],
          ready: META_LEADER,
          timeoutMs: Math.max(1000, deadline - Date.now()),
        });
      try {
        const started = await Promise.allSettled(NAMES.map(launch));
        started.forEach((r, i) => {
          if (r.status === "fulfilled") processes.set(NAMES[i] as string, r.value);
        });
        const failed = started.find((r) => r.status === "rejected");
        if (failed !== undefined) throw failed.reason;
        await Promise.all(ports.map((p) => untilMqttAccepts(p.mqtt, deadline, processes)));
      } catch (error) {
        await stopAll();
        throw error;
      }

      let stopped = false;
      const nodes = NAMES.map((name, i): NatsClusterNode => {
        const p = ports[i] as NodePorts;
        return {
          name,
          url: `mqtt://127.0.0.1:${p.mqtt}`,
          port: p.mqtt,
          natsPort: p.client,
          get pid() {
            return processes.get(name)?.pid ?? -1;
          },
          get running() {
            return processes.has(name);
          },
          output() {
            return (processes.get(name) ?? lastRun.get(name))?.output() ?? "";
          },
          async kill() {
            const proc = processes.get(name);
            if (proc === undefined) return;
            processes.delete(name);
            lastRun.set(name, proc);
            // The broker is exec'ed by the watchdog shell: this pid is its own.
            try {
              process.kill(proc.pid, "SIGKILL");
            } catch {
              // Gone already.
            }
            await proc.stop();
          },
          async start() {
            if (stopped) throw new Error("start() after stop()");
            if (processes.has(name)) return;
            const restartDeadline = Date.now() + timeoutMs;
            const proc = await startBrokerProcess({
              name: `nats-server ${name}`,
              binary: executable,
              args: ["-c", join(dir, `${name}.conf`)],
              ports: [p.client, p.mqtt],
              ready: META_LEADER,
              timeoutMs,
            });
            processes.set(name, proc);
            await untilMqttAccepts(p.mqtt, restartDeadline, processes);
          },
        };
      }) as unknown as [NatsClusterNode, NatsClusterNode, NatsClusterNode];
      return {
        nodes,
        config: (name: string) => configs.get(name) ?? "",
        metaLeader() {
          for (const node of nodes) {
            const proc = processes.get(node.name);
            if (proc === undefined) continue;
            const lines = proc.output().match(LEADER_LINE) ?? [];
            const last = lines[lines.length - 1];
            if (last?.startsWith("Self")) return node;
          }
          return undefined;
        },
        async stop() {
          if (stopped) return;
          stopped = true;
          await stopAll();
          root.remove();
        },
      };
    });
  }
}

/**
 * Resolves once an MQTT client is accepted on `port` (CONNACK 0); retried
 * with backoff until `deadline`, since a node refuses MQTT clients until
 * JetStream is up cluster-wide. Fails with every node's output otherwise.
 */
async function untilMqttAccepts(
  port: number,
  deadline: number,
  processes: ReadonlyMap<string, BrokerProcess>,
): Promise<void> {
  let lastError: unknown;
  for (let delay = 50; Date.now() < deadline; delay = Math.min(delay * 2, 500)) {
    try {
      const client = await connectAsync(
        `mqtt://127.0.0.1:${port}`,
        {
          clientId: `mqrpc_probe_${port}_${Date.now()}`,
          connectTimeout: Math.max(500, Math.min(5000, deadline - Date.now())),
          reconnectPeriod: 0,
        },
        false,
      );
      await client.endAsync();
      return;
    } catch (error) {
      lastError = error;
    }
    await new Promise((r) => setTimeout(r, delay));
  }
  const output = [...processes]
    .map(([name, p]) => `--- node ${name} ---\n${p.output().slice(-3000)}`)
    .join("\n");
  throw new BrokerStartError(
    `NATS cluster node with MQTT port ${port} took no MQTT connection before the deadline: ${String(lastError)}`,
    output,
  );
}
