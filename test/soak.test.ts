/**
 * Soak: many concurrent calls of every kind and of mixed sizes through a
 * Mosquitto with a small per-client queue and a 64 KiB packet limit (MQTT 5,
 * so the CONNACK lowers the publish size and large messages are chunked),
 * while fault proxies stall and reset the server's and the callers' links
 * at random, seeded intervals.
 *
 * What must hold (DESIGN.md, "What the wire protocol must guarantee"):
 * every call ends, with the right payload or a status a fault explains
 * (DEADLINE_EXCEEDED, UNAVAILABLE, CANCELED); none runs past its deadline by
 * more than a margin; no handler runs twice for one request; no handler is
 * left running once the callers are done; heap use stays bounded and
 * returns to where it started.
 *
 * Prints one summary line of figures. Rerun a failing mix with
 * MQRPC_SOAK_SEED=<seed from the summary>.
 */
import { Code, ConnectError, createClient, type HandlerContext } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { mosquittoAvailable, startMosquitto } from "./brokers/mosquitto.js";
import type { BrokerTarget } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { boundedServer, boundedTransport, sleep } from "./support/bounded-fixture.js";
import { FaultProxy } from "./support/fault-proxy.js";
import { heapAfterGc } from "./support/gc.js";
import { codeName, outcome, within } from "./support/outcome.js";
import { hasPattern, patterned } from "./support/patterned.js";
import { Pushable } from "./support/pushable.js";
import { Closer, uniqueServerId } from "./support/rpc-fixture.js";
import { SeededRandom } from "./support/seeded-random.js";

const SEED = Number(process.env.MQRPC_SOAK_SEED ?? 20_240_611);
/** How long new calls are started. */
const LOAD_MS = 20_000;
/** Concurrent callers per transport (two transports). */
const WORKERS = 12;
/** How far past its deadline a call may end. */
const DEADLINE_MARGIN_MS = 2000;
/** Statuses that the faults of this test explain. */
const EXPLAINED = new Set(["DeadlineExceeded", "Unavailable", "Canceled"]);
/** Bounds on heap use: the peak while calls run, and what stays after a GC. */
const PEAK_HEAP_GROWTH = 128 * 1024 * 1024;
const RETAINED_HEAP_GROWTH = 32 * 1024 * 1024;

const MiB = 1024 * 1024;
const ID_HEADER = "x-soak-id";

type Kind = "unary small" | "unary large" | "server stream" | "client stream" | "bidi";

/** Handler runs per request id, and handlers in progress. */
class ServerLedger {
  readonly runs = new Map<number, number>();
  active = 0;
  corrupted = 0;
  private idleWaiters: Array<() => void> = [];

  /** Resolves when no handler is running. */
  idle(): Promise<void> {
    if (this.active === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  begin(ctx: HandlerContext): { n: number; end: () => void } {
    const n = Number(ctx.requestHeader.get(ID_HEADER) ?? -1);
    this.runs.set(n, (this.runs.get(n) ?? 0) + 1);
    this.active++;
    let ended = false;
    return {
      n,
      end: () => {
        if (ended) return;
        ended = true;
        if (--this.active === 0) {
          for (const w of this.idleWaiters.splice(0)) w();
        }
      },
    };
  }

  check(body: Uint8Array | undefined, seed: number): void {
    if (!hasPattern(body ?? new Uint8Array(0), seed)) {
      this.corrupted++;
      throw new ConnectError("request body corrupted", Code.DataLoss);
    }
  }
}

describe.runIf(mosquittoAvailable())("soak", () => {
  const closer = new Closer();
  afterEach(() => closer.closeAll());

  it("mixed concurrent calls through a small-queue Mosquitto while links stall and reset", async () => {
    const started = performance.now();
    const broker = closer.add(
      await startMosquitto({ extraConfig: "max_queued_messages 100\nmax_packet_size 65536" }),
      (b) => b.stop(),
    );
    const target: BrokerTarget = {
      name: "mosquitto-5-small",
      kind: "mosquitto",
      url: broker.url,
      mqttOptions: { protocolVersion: 5 },
      sharedSubscriptions: true,
      protocolVersion: 5,
    };
    const proxies: FaultProxy[] = [];
    for (let i = 0; i < 3; i++) {
      proxies.push(
        closer.add(await FaultProxy.start(broker.url), (p) => {
          p.resume();
          return p.close();
        }),
      );
    }
    const [serverProxy, ...clientProxies] = proxies as [FaultProxy, FaultProxy, FaultProxy];
    const via = (proxy: FaultProxy, clientId: string) => ({
      url: proxy.url,
      protocolVersion: 5 as const,
      clientId,
      reconnectPeriod: 50,
      connectTimeout: 2000,
    });
    const serverId = uniqueServerId("soak");
    const ledger = new ServerLedger();
    const warnings: string[] = [];
    const server = await boundedServer(
      closer,
      target,
      { serverId, mqtt: via(serverProxy, `srv-soak-${SEED}`), shutdownTimeoutMs: 1000 },
      warnings,
    );
    server.service(TestService, {
      emptyCall: () => ({}),
      async unaryCall(req, ctx) {
        const { n, end } = ledger.begin(ctx);
        try {
          ledger.check(req.payload?.body, n);
          return { payload: { body: patterned(req.responseSize, n) } };
        } finally {
          end();
        }
      },
      async *streamingOutputCall(req, ctx) {
        const { n, end } = ledger.begin(ctx);
        try {
          let i = 0;
          for (const p of req.responseParameters) {
            if (p.intervalUs > 0) await sleep(p.intervalUs / 1000);
            yield { payload: { body: patterned(p.size, n + i++) } };
          }
        } finally {
          end();
        }
      },
      async streamingInputCall(requests, ctx) {
        const { n, end } = ledger.begin(ctx);
        try {
          let total = 0;
          let i = 0;
          for await (const r of requests) {
            ledger.check(r.payload?.body, n + i++);
            total += r.payload?.body.byteLength ?? 0;
          }
          return { aggregatedPayloadSize: total };
        } finally {
          end();
        }
      },
      async *fullDuplexCall(requests, ctx) {
        const { n, end } = ledger.begin(ctx);
        try {
          let i = 0;
          for await (const r of requests) {
            ledger.check(r.payload?.body, n + i);
            yield { payload: { body: patterned(r.responseParameters[0]?.size ?? 0, n + i) } };
            i++;
          }
        } finally {
          end();
        }
      },
    });
    const clients = clientProxies.map((proxy, i) =>
      createClient(
        TestService,
        boundedTransport(closer, target, {
          serverId,
          heartbeatMs: 1000,
          mqtt: via(proxy, `cli-soak-${SEED}-${i}`),
        }),
      ),
    );
    // Warm up both paths before the baseline.
    await Promise.all(clients.map((c) => c.emptyCall({}, { timeoutMs: 10_000 })));
    const heapBase = heapAfterGc();
    let heapPeak = heapBase;
    const sampler = setInterval(() => {
      heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed);
    }, 100);

    const loadEnd = performance.now() + LOAD_MS;
    const faults = { resets: 0, stalls: 0 };
    const faultLoop = async (proxy: FaultProxy, rng: SeededRandom) => {
      // Time is the subject here: faults at random moments, stalls of random length.
      while (performance.now() < loadEnd) {
        await sleep(rng.int(300, 2500));
        if (performance.now() >= loadEnd) break;
        if (rng.next() < 0.5) {
          proxy.resetAll();
          faults.resets++;
        } else {
          proxy.stall();
          faults.stalls++;
          await sleep(rng.int(100, 2000));
          proxy.resume();
        }
      }
    };

    let nextId = 0;
    const results = new Map<string, number>();
    const byKind = new Map<Kind, number>();
    const wrong: string[] = [];
    let hung = 0;
    let maxOverrun = Number.NEGATIVE_INFINITY;
    const tally = (key: string) => results.set(key, (results.get(key) ?? 0) + 1);

    const oneCall = async (client: (typeof clients)[number], rng: SeededRandom) => {
      const n = nextId++;
      const kind = rng.pick<Kind>([
        ["unary small", 40],
        ["unary large", 10],
        ["server stream", 20],
        ["client stream", 15],
        ["bidi", 15],
      ]);
      byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
      const timeoutMs = kind === "unary small" ? rng.int(2000, 8000) : rng.int(4000, 12_000);
      const opts = { timeoutMs, headers: { [ID_HEADER]: String(n) } };
      const check = (ok: boolean, what: string) => {
        if (!ok) throw new Error(`wrong payload: ${kind} #${n}: ${what}`);
      };
      const run = async (): Promise<void> => {
        switch (kind) {
          case "unary small":
          case "unary large": {
            const large = kind === "unary large";
            const upLarge = large && rng.next() < 0.5;
            const req = upLarge ? rng.int(100_000, 400_000) : rng.int(0, 256);
            const res = large && !upLarge ? rng.int(100_000, 400_000) : rng.int(0, 256);
            const r = await client.unaryCall(
              { responseSize: res, payload: { body: patterned(req, n) } },
              opts,
            );
            const b = r.payload?.body ?? new Uint8Array(0);
            check(b.byteLength === res && hasPattern(b, n), `${b.byteLength} of ${res} bytes`);
            return;
          }
          case "server stream": {
            const count = rng.int(5, 200);
            const sizes = Array.from({ length: count }, () =>
              rng.next() < 0.02 ? rng.int(70_000, 150_000) : rng.int(1, 2000),
            );
            const interval = rng.next() < 0.3 ? rng.int(1, 20) * 1000 : 0;
            let i = 0;
            for await (const r of client.streamingOutputCall(
              { responseParameters: sizes.map((size) => ({ size, intervalUs: interval })) },
              opts,
            )) {
              const b = r.payload?.body ?? new Uint8Array(0);
              check(
                b.byteLength === sizes[i] && hasPattern(b, n + i),
                `message ${i}: ${b.byteLength} of ${sizes[i]} bytes`,
              );
              i++;
            }
            check(i === count, `${i} of ${count} messages`);
            return;
          }
          case "client stream": {
            const sizes = Array.from({ length: rng.int(5, 200) }, () =>
              rng.next() < 0.02 ? rng.int(70_000, 150_000) : rng.int(1, 2000),
            );
            async function* requests() {
              for (let i = 0; i < sizes.length; i++)
                yield { payload: { body: patterned(sizes[i] ?? 0, n + i) } };
            }
            const r = await client.streamingInputCall(requests(), opts);
            const sum = sizes.reduce((a, b) => a + b, 0);
            check(r.aggregatedPayloadSize === sum, `${r.aggregatedPayloadSize} of ${sum} bytes`);
            return;
          }
          case "bidi": {
            const count = rng.int(2, 50);
            const sizes = Array.from({ length: count }, () => rng.int(0, 3000));
            const requests = new Pushable<{
              payload: { body: Uint8Array };
              responseParameters: { size: number }[];
            }>();
            const it = client.fullDuplexCall(requests, opts)[Symbol.asyncIterator]();
            try {
              for (let i = 0; i < count; i++) {
                requests.push({
                  payload: { body: patterned(rng.int(0, 3000), n + i) },
                  responseParameters: [{ size: sizes[i] ?? 0 }],
                });
                const r = await it.next();
                const b = r.value?.payload?.body ?? new Uint8Array(0);
                check(
                  r.done !== true && b.byteLength === sizes[i] && hasPattern(b, n + i),
                  `pair ${i}: ${b.byteLength} of ${sizes[i]} bytes`,
                );
              }
              requests.end();
              check((await it.next()).done === true, "a response after the last pair");
            } finally {
              requests.end();
            }
            return;
          }
        }
      };
      const since = performance.now();
      let o: Awaited<ReturnType<typeof outcome<void>>>;
      try {
        o = await within(outcome(run(), since), timeoutMs + DEADLINE_MARGIN_MS + 5000, "the call");
      } catch {
        hung++;
        tally("HUNG");
        return;
      }
      maxOverrun = Math.max(maxOverrun, o.ms - timeoutMs);
      if (o.ok) tally("OK");
      else if (o.error instanceof Error && o.error.message.startsWith("wrong payload")) {
        wrong.push(o.error.message);
        tally("WRONG");
      } else if (o.code === Code.DataLoss) {
        wrong.push(`${kind} #${n}: server saw a corrupted request`);
        tally("WRONG");
      } else tally(codeName(o.code));
    };

    const workers = clients.flatMap((client, c) =>
      Array.from({ length: WORKERS }, async (_, w) => {
        const rng = new SeededRandom(SEED + 1000 * (c + 1) + w);
        while (performance.now() < loadEnd) await oneCall(client, rng);
      }),
    );
    await Promise.all([
      ...workers,
      ...proxies.map((p, i) => faultLoop(p, new SeededRandom(SEED + i + 1))),
    ]);
    clearInterval(sampler);
    for (const p of proxies) p.resume();

    // The callers are done: the server must not be left running handlers.
    await within(ledger.idle(), 15_000, "the end of every handler").catch(() => {});
    const handlersLeft = ledger.active;
    const heapAfter = heapAfterGc();

    const reruns = [...ledger.runs.entries()].filter(([, c]) => c > 1).map(([n]) => n);
    const calls = nextId;
    const figures = [...results.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k}=${v}`)
      .join(" ");
    const mib = (b: number) => (b / MiB).toFixed(1);
    console.log(
      `soak seed=${SEED}: calls=${calls} ${figures}; kinds ${[...byKind.entries()].map(([k, v]) => `${k}=${v}`).join(", ")}; ` +
        `handler reruns=${reruns.length} handlers left=${handlersLeft} server-side corrupt=${ledger.corrupted}; ` +
        `max past deadline=${Math.round(maxOverrun)} ms; faults resets=${faults.resets} stalls=${faults.stalls}; ` +
        `heap base=${mib(heapBase)} MiB peak=+${mib(heapPeak - heapBase)} MiB after=+${mib(heapAfter - heapBase)} MiB; ` +
        `server warnings=${warnings.length}; ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
    if (wrong.length > 0) console.log(`wrong payloads:\n  ${wrong.slice(0, 20).join("\n  ")}`);

    expect(calls).toBeGreaterThan(200);
    expect(faults.resets + faults.stalls).toBeGreaterThan(10);
    expect(results.get("OK") ?? 0).toBeGreaterThan(calls / 2);
    expect(wrong).toEqual([]);
    expect(hung).toBe(0);
    const unexplained = [...results.keys()].filter(
      (k) => k !== "OK" && k !== "WRONG" && k !== "HUNG" && !EXPLAINED.has(k),
    );
    expect(unexplained).toEqual([]);
    expect(maxOverrun).toBeLessThan(DEADLINE_MARGIN_MS);
    expect(reruns).toEqual([]);
    expect(handlersLeft).toBe(0);
    expect(heapPeak - heapBase).toBeLessThan(PEAK_HEAP_GROWTH);
    expect(heapAfter - heapBase).toBeLessThan(RETAINED_HEAP_GROWTH);
  }, 90_000);
});
