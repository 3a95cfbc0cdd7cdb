/**
 * Call slots are shared fairly (docs/PROTOCOL.md 17.1): a caller that floods
 * a server, or holds slots with calls that never end, leaves room for the
 * others, and a call that finds no slot waits for one (round-robin across
 * callers) before it is refused. Issue 10 item 5 and issue 11 item 4, on the
 * embedded broker and Mosquitto 5.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createMqttServer, type MqttServer, type MqttServerOptions } from "@mqrpc/runtime";
import { connectAsync, type MqttClient } from "mqtt";
import { afterEach, describe, expect, it } from "vitest";
import {
  type CallFrame,
  decodeCallFrames,
  encodeFrame,
  type FrameInit,
} from "../packages/runtime/src/wire/frame-codec.js";
import { writeCoalesced } from "../packages/runtime/src/wire/frame-encoder.js";
import { TopicScheme } from "../packages/runtime/src/wire/topic-scheme.js";
import { forBrokersWhere, type RunTarget } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import {
  Closer,
  deferred,
  mqttOptions,
  startServer,
  startTransport,
  uniqueServerId,
} from "./support/rpc-fixture.js";

/** A call that succeeded, next to the errors of those that failed. */
const OK = "ok";
type Outcome = typeof OK | ConnectError;

/** The outcome of a call, without rejecting. */
function outcome(call: Promise<unknown>, settled?: Outcome[]): Promise<Outcome> {
  return call
    .then(
      (): Outcome => OK,
      (e: unknown): Outcome => ConnectError.from(e),
    )
    .then((result) => {
      settled?.push(result);
      return result;
    });
}

const codeName = (code: number) => Code[code] ?? String(code);

const codes = (outcomes: readonly Outcome[]) =>
  outcomes.map((o) => (o === OK ? "OK" : codeName(o.code)));

const count = (outcomes: readonly Outcome[], code: string) =>
  codes(outcomes).filter((c) => c === code).length;

/** The server's slot bookkeeping (CallAdmission), read by the tests. */
function admission(server: MqttServer): {
  readonly running: number;
  readonly waiting: number;
  runningOf(caller: string): number;
  waitingOf(caller: string): number;
} {
  return (server as unknown as { admission: ReturnType<typeof admission> }).admission;
}

/** A client id (and so client key) of its own for each caller. */
const callerId = (label: string) => `fair-${label}-${Math.random().toString(36).slice(2, 8)}`;

/**
 * An MQTT client that publishes hand-made frames as caller `key` and
 * collects the frames replied to it.
 */
async function rawCaller(closer: Closer, target: RunTarget, serverId: string, key: string) {
  const scheme = new TopicScheme();
  const client: MqttClient = closer.add(
    await connectAsync(target.url, { ...target.mqttOptions, clientId: key }),
    (c) => c.endAsync(),
  );
  const replies: CallFrame[] = [];
  client.on("message", (_topic, payload) => replies.push(...decodeCallFrames(payload)));
  await client.subscribeAsync(scheme.replyTopic(key, serverId), { qos: 1 });
  return {
    replies,
    /** Publishes `frames` coalesced, `perPublish` to a publish. */
    async send(method: string, frames: readonly FrameInit[], perPublish = 100): Promise<void> {
      const topic = scheme.requestTopic(serverId, TestService.typeName, method, key);
      for (let i = 0; i < frames.length; i += perPublish) {
        const batch = frames.slice(i, i + perPublish).map(encodeFrame);
        const payload = batch.length === 1 ? (batch[0] as Uint8Array) : writeCoalesced(batch);
        await client.publishAsync(topic, Buffer.from(payload), { qos: 1 });
      }
    },
    /** The End frames received, by status code name. */
    endCodes(): string[] {
      return replies.flatMap((f) =>
        f.kind.case === "end" ? [codeName(f.kind.value.status?.code ?? 0)] : [],
      );
    },
  };
}

/** Opens of calls `first`..`first + n - 1` that never half-close: no heartbeat, no deadline. */
function idleOpens(first: number, n: number): FrameInit[] {
  return Array.from({ length: n }, (_, i) => ({
    callId: first + i,
    seq: 0,
    kind: { case: "open" as const, value: { heartbeatMs: 0, timeoutMs: 0 } },
  }));
}

forBrokersWhere(
  (t) => t.kind === "aedes" || t.name === "mosquitto-5",
  (target) => {
    describe("one caller cannot take every slot", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      it("with the defaults, a caller flooding 2000 slow calls leaves a quiet caller's 20 calls served; the flood beyond running and waiting calls waits in the caller", async () => {
        const serverId = uniqueServerId("flood");
        const release = deferred();
        const server = await startServer(closer, target, { serverId, shutdownTimeoutMs: 0 });
        server.service(TestService, {
          async unaryCall() {
            await release.promise;
            return {};
          },
          emptyCall: () => ({}),
        });
        await server.announced();
        const floodKey = callerId("flood");
        const flooder = createClient(
          TestService,
          startTransport(closer, target, { serverId, mqtt: mqttOptions(target, floodKey) }),
        );
        const quiet = createClient(
          TestService,
          startTransport(closer, target, {
            serverId,
            mqtt: mqttOptions(target, callerId("quiet")),
          }),
        );
        const settled: Outcome[] = [];
        const flood = Array.from({ length: 2000 }, () => outcome(flooder.unaryCall({}), settled));
        // 900 run (the last 100 slots are kept for callers below their fair
        // share), 250 wait (maxQueuedCallsPerClient: a quarter of 1000): what
        // the server announces (max_calls_per_caller 1150); the flooder
        // holds the other 850 itself (a raw caller's are refused: below).
        const slots = admission(server);
        await expect
          .poll(() => [slots.runningOf(floodKey), slots.waitingOf(floodKey)], { timeout: 30_000 })
          .toEqual([900, 250]);
        expect(settled).toEqual([]);

        const started = Date.now();
        // Budget: each of the quiet caller's calls within 10 s while the flood holds its slots.
        const quietCalls = await Promise.all(
          Array.from({ length: 20 }, () => outcome(quiet.emptyCall({}, { timeoutMs: 10_000 }))),
        );
        const quietMs = Date.now() - started;
        expect(codes(quietCalls)).toEqual(new Array(20).fill("OK"));
        expect([slots.runningOf(floodKey), slots.waitingOf(floodKey)]).toEqual([900, 250]);

        release.resolve();
        const all = await Promise.all(flood);
        expect(count(all, "OK")).toBe(2000);
        expect([slots.running, slots.waiting]).toEqual([0, 0]);
        console.log(
          `fairness on ${target.name}: quiet caller's 20 calls took ${quietMs} ms next to 900 running and 250 waiting flood calls`,
        );
      }, 60_000);

      it("refuses admission options out of range, naming them", async () => {
        for (const [name, value] of [
          ["maxQueuedCalls", -1],
          ["maxQueuedCallsPerClient", 1.5],
          ["maxConcurrentCalls", 0],
        ] as const) {
          await expect(
            createMqttServer({ mqtt: mqttOptions(target), serverId: "bad", [name]: value }),
          ).rejects.toThrow(name);
        }
      });

      it("a quiet caller's waiting calls start ahead of a flooder's backlog as slots free", async () => {
        const serverId = uniqueServerId("round");
        const release = deferred();
        const starts: string[] = [];
        const server = await startServer(closer, target, {
          serverId,
          maxConcurrentCalls: 10,
          maxQueuedCalls: 50,
          shutdownTimeoutMs: 0,
        });
        server.service(TestService, {
          async unaryCall() {
            starts.push("flood");
            await release.promise;
            return {};
          },
          async emptyCall() {
            starts.push("quiet");
            await release.promise;
            return {};
          },
        });
        await server.announced();
        const flooder = createClient(
          TestService,
          startTransport(closer, target, { serverId, mqtt: mqttOptions(target, callerId("a")) }),
        );
        const quiet = createClient(
          TestService,
          startTransport(closer, target, { serverId, mqtt: mqttOptions(target, callerId("b")) }),
        );
        const settled: Outcome[] = [];
        const flood = Array.from({ length: 40 }, () => outcome(flooder.unaryCall({}), settled));
        // 9 run (the 10th slot is kept for callers below their share), 13 wait
        // (a quarter of 50), and the flooder holds the other 18 itself.
        const slots = admission(server);
        await expect.poll(() => [slots.running, slots.waiting]).toEqual([9, 13]);
        expect(settled).toEqual([]);
        const quietCalls = Array.from({ length: 6 }, () => outcome(quiet.emptyCall({})));
        // One starts in the kept slot, the other 5 wait behind the flood's 13.
        await expect.poll(() => [slots.running, slots.waiting]).toEqual([10, 18]);
        release.resolve();
        expect(codes(await Promise.all(quietCalls))).toEqual(new Array(6).fill("OK"));
        const all = await Promise.all(flood);
        expect(count(all, "OK")).toBe(40);
        // In one queue the quiet caller's last call would start after all 22
        // of the flood's at the server; round-robin (and the fair share) let at most one of
        // the flood's start per quiet call, and a few more as slots free together.
        const lastQuiet = starts.lastIndexOf("quiet");
        const floodBefore = starts.slice(0, lastQuiet).filter((s) => s === "flood").length;
        console.log(
          `fairness on ${target.name}: the quiet caller's last call started after ${floodBefore} of the flood's 22`,
        );
        expect(floodBefore).toBeLessThanOrEqual(9 + 8);
      }, 30_000);

      /**
       * An announced server (with `options`) whose client streams end only
       * when the caller half-closes, and a raw caller of it whose client id
       * (`attackerKey`) is `callerId(attacker)`.
       */
      async function attacked(
        label: string,
        attacker: string,
        options: Partial<MqttServerOptions>,
      ) {
        const serverId = uniqueServerId(label);
        const server = await startServer(closer, target, {
          serverId,
          ...options,
          shutdownTimeoutMs: 0,
          logger: { warn: () => {} },
        });
        server.service(TestService, {
          async streamingInputCall(requests) {
            for await (const _ of requests) {
              // never ends by itself: the attacker never half-closes
            }
            return {};
          },
          emptyCall: () => ({}),
        });
        await server.announced();
        const attackerKey = callerId(attacker);
        return {
          serverId,
          server,
          attackerKey,
          attacker: await rawCaller(closer, target, serverId, attackerKey),
        };
      }

      it("an attacker holding slots with calls without heartbeat or deadline (issue 11 item 4) leaves a quiet caller served", async () => {
        const { serverId, server, attackerKey, attacker } = await attacked("hold", "attacker", {});
        // 1500 Opens in 15 publishes.
        await attacker.send("StreamingInputCall", idleOpens(1, 1500));
        const slots = admission(server);
        await expect.poll(() => attacker.endCodes().length, { timeout: 20_000 }).toBe(350);
        expect(new Set(attacker.endCodes())).toEqual(new Set(["ResourceExhausted"]));
        expect([slots.runningOf(attackerKey), slots.waitingOf(attackerKey)]).toEqual([900, 250]);

        const quiet = createClient(
          TestService,
          startTransport(closer, target, { serverId, mqtt: mqttOptions(target, callerId("q")) }),
        );
        // Budget: each call within 10 s while the attacker holds its slots.
        const quietCalls = await Promise.all(
          Array.from({ length: 20 }, () => outcome(quiet.emptyCall({}, { timeoutMs: 10_000 }))),
        );
        expect(codes(quietCalls)).toEqual(new Array(20).fill("OK"));
        expect([slots.runningOf(attackerKey), slots.waitingOf(attackerKey)]).toEqual([900, 250]);
      }, 60_000);

      it("calls without heartbeats, running or waiting, end after callIdleTimeoutMs and give their slots back", async () => {
        const { server, attacker } = await attacked("idle", "idle", {
          maxConcurrentCalls: 100,
          callIdleTimeoutMs: 1000,
        });
        await attacker.send("StreamingInputCall", idleOpens(1, 300));
        // 90 run, 25 wait, 185 refused; then the 115 end, idle.
        await expect.poll(() => attacker.endCodes().length, { timeout: 20_000 }).toBe(300);
        const ends = attacker.endCodes();
        expect(ends.filter((c) => c === "ResourceExhausted")).toHaveLength(185);
        expect(ends.filter((c) => c === "Unavailable")).toHaveLength(115);
        const slots = admission(server);
        expect([slots.running, slots.waiting]).toEqual([0, 0]);
      }, 30_000);
    });
  },
);

forBrokersWhere(
  (t) => t.kind === "aedes",
  (target) => {
    describe("a call waiting for a slot", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      /** A server with one slot, taken by a call that ends on `release`. */
      async function oneSlotServer(options: {
        maxQueuedCalls?: number;
        shutdownTimeoutMs?: number;
      }) {
        const serverId = uniqueServerId("wait");
        const release = deferred();
        let emptyCalls = 0;
        const server = await startServer(closer, target, {
          serverId,
          maxConcurrentCalls: 1,
          shutdownTimeoutMs: 0,
          ...options,
        });
        server.service(TestService, {
          async unaryCall() {
            await release.promise;
            return {};
          },
          emptyCall: () => {
            emptyCalls++;
            return {};
          },
          async streamingInputCall(requests) {
            let size = 0;
            for await (const request of requests) size += request.payload?.body.byteLength ?? 0;
            return { aggregatedPayloadSize: size };
          },
        });
        await server.announced();
        const occupant = createClient(
          TestService,
          startTransport(closer, target, { serverId, mqtt: mqttOptions(target, callerId("o")) }),
        );
        const occupying = outcome(occupant.unaryCall({}));
        const slots = admission(server);
        await expect.poll(() => slots.running).toBe(1);
        /**
         * A caller with a client id of its own (`key`, `callerId(label)`) and
         * 250 ms heartbeats: quick, yet a second of silence (four intervals,
         * after which a caller gives up) under a loaded machine's stalls
         * does not end the call these tests watch.
         */
        const heartbeatCaller = (label: string) => {
          const key = callerId(label);
          const client = createClient(
            TestService,
            startTransport(closer, target, {
              serverId,
              mqtt: mqttOptions(target, key),
              heartbeatMs: 250,
            }),
          );
          return { key, client };
        };
        return {
          serverId,
          server,
          slots,
          release,
          occupying,
          emptyCalls: () => emptyCalls,
          heartbeatCaller,
        };
      }

      it("is known to its caller's Pings, and runs once the slot frees", async () => {
        const { serverId, slots, release, occupying, heartbeatCaller } = await oneSlotServer({});
        const { key, client: waiter } = heartbeatCaller("pinger");
        const observer = closer.add(await connectAsync(target.url, target.mqttOptions), (c) =>
          c.endAsync(),
        );
        const pongs: boolean[] = [];
        observer.on("message", (_t, payload) => {
          for (const f of decodeCallFrames(payload)) {
            if (f.kind.case === "pong") pongs.push(f.kind.value.unknown);
          }
        });
        await observer.subscribeAsync(new TopicScheme().replyTopic(key, serverId), { qos: 1 });
        const waiting = outcome(waiter.emptyCall({}));
        await expect.poll(() => slots.waiting).toBe(1);
        // Eight heartbeat intervals: a caller that hears nothing for four gives up.
        await expect.poll(() => pongs.length, { timeout: 20_000 }).toBeGreaterThanOrEqual(8);
        expect(pongs.every((unknown) => !unknown)).toBe(true);
        release.resolve();
        expect(await waiting).toBe(OK);
        expect(await occupying).toBe(OK);
      });

      it("leaves the queue when cancelled, and its handler never runs", async () => {
        const { serverId, slots, release, emptyCalls } = await oneSlotServer({
          maxQueuedCalls: 1,
        });
        const waiter = createClient(
          TestService,
          startTransport(closer, target, { serverId, mqtt: mqttOptions(target, callerId("c")) }),
        );
        const abort = new AbortController();
        const cancelled = outcome(waiter.emptyCall({}, { signal: abort.signal }));
        await expect.poll(() => slots.waiting).toBe(1);
        const full = await outcome(waiter.emptyCall({}));
        expect(full === OK ? "OK" : full.code).toBe(Code.ResourceExhausted);
        expect(full === OK ? "" : full.message).toMatch(/maxConcurrentCalls.*maxQueuedCalls/);
        abort.abort();
        expect(codes([await cancelled])).toEqual(["Canceled"]);
        await expect.poll(() => slots.waiting).toBe(0);
        const next = outcome(waiter.emptyCall({}));
        await expect.poll(() => slots.waiting).toBe(1);
        release.resolve();
        expect(await next).toBe(OK);
        expect(emptyCalls()).toBe(1);
      });

      it("ends at its deadline with DEADLINE_EXCEEDED, never having run", async () => {
        const { serverId, slots, emptyCalls } = await oneSlotServer({});
        const raw = await rawCaller(closer, target, serverId, callerId("raw"));
        await raw.send("EmptyCall", [
          {
            callId: 7,
            seq: 0,
            kind: {
              case: "open",
              value: { timeoutMs: 300, halfClose: true, message: new Uint8Array(0) },
            },
          },
        ]);
        await expect.poll(() => raw.endCodes(), { timeout: 10_000 }).toEqual(["DeadlineExceeded"]);
        expect([slots.running, slots.waiting]).toEqual([1, 0]);
        expect(emptyCalls()).toBe(0);
      });

      it("holds its request stream under flow control until it runs", async () => {
        const { serverId, slots, release, heartbeatCaller } = await oneSlotServer({});
        const { key, client: waiter } = heartbeatCaller("stream");
        const scheme = new TopicScheme();
        const observer = closer.add(await connectAsync(target.url, target.mqttOptions), (c) =>
          c.endAsync(),
        );
        let messages = 0;
        let pongs = 0;
        observer.on("message", (_t, payload) => {
          for (const f of decodeCallFrames(payload)) {
            if (f.kind.case === "message") messages++;
            if (f.kind.case === "pong") pongs++;
          }
        });
        await observer.subscribeAsync(
          [
            scheme.requestTopic(serverId, TestService.typeName, "StreamingInputCall", key),
            scheme.replyTopic(key, serverId),
          ],
          { qos: 1 },
        );
        const body = new Uint8Array(10);
        async function* requests() {
          for (let i = 0; i < 200; i++) yield { payload: { body } };
        }
        const answer = waiter.streamingInputCall(requests());
        await expect.poll(() => slots.waiting).toBe(1);
        // The window (64 frames, the Open included) is sent; then nothing
        // more for four heartbeat round trips.
        await expect.poll(() => messages, { timeout: 10_000 }).toBe(63);
        const seen = pongs;
        await expect.poll(() => pongs, { timeout: 10_000 }).toBeGreaterThanOrEqual(seen + 4);
        expect(messages).toBe(63);
        release.resolve();
        expect((await answer).aggregatedPayloadSize).toBe(2000);
      });

      it("gets UNAVAILABLE at once when the server shuts down, while running calls have their grace", async () => {
        const { serverId, server, release, occupying } = await oneSlotServer({
          shutdownTimeoutMs: 30_000,
        });
        const waiter = createClient(
          TestService,
          startTransport(closer, target, { serverId, mqtt: mqttOptions(target, callerId("s")) }),
        );
        const waiting = outcome(waiter.emptyCall({}, { timeoutMs: 10_000 }));
        await expect.poll(() => admission(server).waiting).toBe(1);
        const closing = server.close();
        const refused = await waiting;
        expect(codes([refused])).toEqual(["Unavailable"]);
        expect(refused === OK ? "" : refused.message).toMatch(/shutting down/);
        release.resolve();
        await closing;
        expect(await occupying).toBe(OK);
      });
    });
  },
);
