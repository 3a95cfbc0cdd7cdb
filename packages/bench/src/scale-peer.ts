/**
 * The processes of the scale rows (scale.ts): `servers` hosts many mqrpc
 * servers (one per simulated device, each with its own server id), and
 * `client` is the fleet caller, which calls each device through a
 * transport of its own (`createMqttTransport({ mqtt: url, serverId })`, the
 * natural user code) and measures its own footprint. Forked by scale.ts
 * with the role and a JSON config in argv, driven by `{ id, command }`
 * messages over IPC, each answered with `{ id, result }` or `{ id, error }`.
 * Exits when told to stop or when its parent goes away.
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { getHeapSpaceStatistics } from "node:v8";
import { type Client, createClient } from "@connectrpc/connect";
import { createMqttServer, createMqttTransport, type MqttTransport } from "@mqrpc/runtime";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { collectGarbage } from "../../../test/support/gc.js";
import { ECHO_BYTES } from "./echo-service.js";

/** The config a scale peer is started with (argv[3], JSON). */
export interface ScalePeerConfig {
  /** Broker URL. */
  readonly url: string;
  /** The server ids to host (`servers`) or to call (`client`). */
  readonly serverIds: readonly string[];
  /** `client`: calls in flight at once (and transports being created at once). */
  readonly concurrency?: number;
  /** `client`: each call's deadline, in milliseconds. */
  readonly callTimeoutMs?: number;
}

/** The client's footprint after two full garbage collections. */
export interface Footprint {
  /** Resident set size, bytes. */
  readonly rss: number;
  /**
   * Resident bytes of V8's young generation (new space), part of `rss`.
   * Empty after the GC, but V8 grows it (up to 2 × 16 MiB on 64-bit) with
   * the allocation rate and keeps it: a cost of having been busy, not of
   * what is held.
   */
  readonly youngGeneration: number;
  /** V8 heap in use plus memory outside it held by JS objects (buffers), bytes. */
  readonly heap: number;
  /** TCP connections of this process to the broker's port; undefined without /proc. */
  readonly brokerConnections: number | undefined;
}

/** One pass of calls over every device. */
export interface CallPass {
  /** Wall time from the first call started to the last one ended, ms. */
  readonly ms: number;
  /** Calls that failed, and the first failure's message. */
  readonly failed: number;
  readonly firstError?: string;
}

/** A request to a scale peer and what it answers. */
export type ScaleCommand =
  | { command: "warm-up" } // client: one device called and closed, then the baseline Footprint
  | { command: "first-calls" } // client: a transport per device and its first call: CallPass
  | { command: "second-calls" } // client: every device called again: CallPass
  | { command: "footprint" } // client: Footprint
  | { command: "close" }; // client: every transport closed, then the Footprint

const [role = "", configJson = "{}"] = process.argv.slice(2);
const config = JSON.parse(configJson) as ScalePeerConfig;
const brokerPort = Number(new URL(config.url).port);

let stop: () => Promise<void> = async () => {};
let handle: (request: ScaleCommand) => Promise<unknown> = async (request) => {
  throw new Error(`${role} does not handle ${request.command}`);
};

process.on("disconnect", () => process.exit(1));
process.on("message", (message) => {
  if (message === "stop") {
    void stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
    return;
  }
  const { id, ...request } = message as ScaleCommand & { id: number };
  handle(request as ScaleCommand).then(
    (result) => process.send?.({ id, result }),
    (e: unknown) => process.send?.({ id, error: e instanceof Error ? e.stack : String(e) }),
  );
});

/** Runs `work` for every item, at most `limit` at once. */
async function eachBounded<T>(
  items: readonly T[],
  limit: number,
  work: (item: T, index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const index = next++;
        await work(items[index] as T, index);
      }
    }),
  );
}

/**
 * This process's ESTABLISHED TCP connections to the broker's port: its
 * socket inodes (/proc/self/fd) matched against /proc/net/tcp and tcp6.
 */
function brokerConnections(): number | undefined {
  try {
    const inodes = new Set<string>();
    for (const fd of readdirSync("/proc/self/fd")) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
        if (m !== null) inodes.add(m[1] as string);
      } catch {
        // The fd closed while we looked (the readdir's own one does).
      }
    }
    let count = 0;
    for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
      let text: string;
      try {
        text = readFileSync(table, "utf8");
      } catch {
        continue;
      }
      for (const line of text.split("\n").slice(1)) {
        const cols = line.trim().split(/\s+/);
        const remotePort = Number.parseInt(cols[2]?.split(":")[1] ?? "", 16);
        // st 01 is ESTABLISHED; column 9 the socket's inode.
        if (remotePort === brokerPort && cols[3] === "01" && inodes.has(cols[9] ?? "")) count++;
      }
    }
    return count;
  } catch {
    return undefined;
  }
}

function footprint(): Footprint {
  collectGarbage();
  collectGarbage();
  const memory = process.memoryUsage();
  const young = getHeapSpaceStatistics()
    .filter((space) => space.space_name.startsWith("new_"))
    .reduce((sum, space) => sum + space.physical_space_size, 0);
  return {
    rss: memory.rss,
    youngGeneration: young,
    heap: memory.heapUsed + memory.external,
    brokerConnections: brokerConnections(),
  };
}

async function hostServers(): Promise<void> {
  const servers: Array<{ close(): Promise<void> }> = [];
  stop = async () => {
    await Promise.allSettled(servers.map((s) => s.close()));
  };
  await eachBounded(config.serverIds, 50, async (serverId) => {
    const server = await createMqttServer({ mqtt: config.url, serverId });
    servers.push(server);
    server.service(TestService, {
      unaryCall: (req) => ({ payload: { body: req.payload?.body ?? new Uint8Array(0) } }),
    });
  });
}

async function fleetClient(): Promise<void> {
  const concurrency = config.concurrency ?? 100;
  const callOptions = { timeoutMs: config.callTimeoutMs ?? 30_000 };
  const request = { payload: { body: new Uint8Array(ECHO_BYTES) } };
  const transports: MqttTransport[] = [];
  let devices: Array<Client<typeof TestService>> = [];
  const closeAll = async () => {
    await Promise.allSettled(transports.splice(0).map((t) => t.close()));
    devices = [];
  };
  stop = closeAll;

  const pass = async (call: (index: number) => Promise<unknown>): Promise<CallPass> => {
    let failed = 0;
    let firstError: string | undefined;
    const started = performance.now();
    await eachBounded(config.serverIds, concurrency, async (_id, index) => {
      try {
        await call(index);
      } catch (e) {
        failed++;
        firstError ??= String(e);
      }
    });
    const ms = performance.now() - started;
    return firstError === undefined ? { ms, failed } : { ms, failed, firstError };
  };

  handle = async (r) => {
    switch (r.command) {
      case "warm-up": {
        // Loads and compiles the code a call runs, so that the baseline
        // holds it and the growth is what the devices cost.
        const serverId = config.serverIds[0] as string;
        const transport = createMqttTransport({ mqtt: config.url, serverId });
        try {
          await createClient(TestService, transport).unaryCall(request, callOptions);
        } finally {
          await transport.close();
        }
        return footprint();
      }
      case "first-calls":
        return pass(async (index) => {
          const transport = createMqttTransport({
            mqtt: config.url,
            serverId: config.serverIds[index] as string,
          });
          transports.push(transport);
          const device = createClient(TestService, transport);
          devices[index] = device;
          await device.unaryCall(request, callOptions);
        });
      case "second-calls":
        return pass(async (index) => {
          const device = devices[index];
          if (device === undefined) throw new Error(`device ${index} has no transport`);
          await device.unaryCall(request, callOptions);
        });
      case "footprint":
        return footprint();
      case "close":
        await closeAll();
        return footprint();
    }
  };
}

async function main(): Promise<void> {
  if (role === "servers") await hostServers();
  else if (role === "client") await fleetClient();
  else throw new Error(`unknown role ${role}`);
  process.send?.({ ready: true });
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
