/**
 * mqrpc across an edge broker bridged to a cloud broker: a device on a
 * Mosquitto on its gateway box, callers on the central Mosquitto, the two
 * joined by a Mosquitto bridge whose `connection` block is the one
 * docs/DEPLOYMENT.md gives (test/brokers/mosquitto-bridge.ts reads it from
 * there). The bridge's TCP link runs through the fault proxy.
 *
 * - All four RPC kinds, presence and last wills cross the bridge, over the
 *   documented MQTT 3.1.1 bridge and over an MQTT 5 one.
 * - On the documented bridge: its link dropped for 10 s under calls in
 *   flight of every kind, and the edge broker restarted (without
 *   persistence) under them: every call completes whole within its
 *   deadline, and ran its handler once.
 */
import {
  type Client,
  createClient,
  type HandlerContext,
  type ServiceImpl,
} from "@connectrpc/connect";
import { createMqttServer, createMqttTransport, type MqttTransportOptions } from "@mqrpc/runtime";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { mosquittoAvailable } from "./brokers/mosquitto.js";
import { type MosquittoBridge, startMosquittoBridge } from "./brokers/mosquitto-bridge.js";
import { brokerSelection, kindSelected } from "./brokers/selection.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { ChildServer } from "./support/child-server-process.js";
import { codeName, describeOutcome, type Outcome, outcome, within } from "./support/outcome.js";
import { Presence_State, PresenceObserver } from "./support/presence-observer.js";
import { Closer, uniqueServerId } from "./support/rpc-fixture.js";

/** Runs where mosquitto is installed, and fails where MQRPC_REQUIRE_BROKERS asks for it and it is not. */
const RUN = mosquittoAvailable() || (brokerSelection().required && kindSelected("mosquitto"));

/** The request header that names a call, so that handler runs are counted per call. */
const CALL = "x-call";
/** Messages per stream in the fault cases, 20 ms apart: ~4 s of streaming. */
const STREAM_MESSAGES = 200;
const STREAM_INTERVAL_MS = 20;
/** Deadline of the calls in flight at a fault: a bound, not an expectation. */
const FAULT_DEADLINE_MS = 60_000;
/** How long the bridge's link stays down. */
const LINK_DOWN_MS = 10_000;

const idOf = (i: number) => new Uint8Array([i & 0xff, i >> 8]);
const indexOf = (body: Uint8Array | undefined) => (body?.[0] ?? 0) | ((body?.[1] ?? 0) << 8);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * TestService counting handler runs per call (the `x-call` header): unary
 * calls wait `unaryMs`; streams number their messages.
 */
function ledgerService(
  runs: Map<string, number>,
  unaryMs: number,
): Partial<ServiceImpl<typeof TestService>> {
  const ran = (ctx: HandlerContext) => {
    const call = ctx.requestHeader.get(CALL) ?? "?";
    runs.set(call, (runs.get(call) ?? 0) + 1);
  };
  return {
    async unaryCall(req, ctx) {
      ran(ctx);
      if (req.responseSize > 0) await sleep(unaryMs);
      return { payload: { body: new Uint8Array(req.responseSize) } };
    },
    async *streamingOutputCall(req, ctx) {
      ran(ctx);
      for (let i = 0; i < req.responseParameters.length; i++) {
        await sleep((req.responseParameters[i]?.intervalUs ?? 0) / 1000);
        yield { payload: { body: idOf(i) } };
      }
    },
    async streamingInputCall(reqs, ctx) {
      ran(ctx);
      let next = 0;
      for await (const r of reqs) {
        if (indexOf(r.payload?.body) !== next) throw new Error(`message ${next} out of order`);
        next++;
      }
      return { aggregatedPayloadSize: next };
    },
    async *fullDuplexCall(reqs, ctx) {
      ran(ctx);
      for await (const r of reqs) yield { payload: { body: r.payload?.body ?? new Uint8Array(0) } };
    },
  };
}

/** Request messages numbered 0..count-1, `intervalMs` apart. */
async function* numbered(count: number, intervalMs: number) {
  for (let i = 0; i < count; i++) {
    if (intervalMs > 0) await sleep(intervalMs);
    yield { payload: { body: idOf(i) } };
  }
}

/** Whether `got` is 0..count-1, each once, in order; else what is wrong with it. */
function sequenceProblem(got: readonly number[], count: number): string | undefined {
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== i) return `message ${i} is ${got[i]} (of ${got.length})`;
  }
  return got.length === count ? undefined : `${got.length} of ${count} messages`;
}

/** One call of each kind in flight; `started` resolves once the server stream has delivered `killAt` messages. */
function callsInFlight(
  clients: readonly [Client<typeof TestService>, Client<typeof TestService>],
  tag: string,
  killAt: number,
) {
  const [one, two] = clients;
  const options = (call: string) => ({
    timeoutMs: FAULT_DEADLINE_MS,
    headers: { [CALL]: `${tag}-${call}` },
  });
  let reached!: () => void;
  const started = new Promise<void>((resolve) => {
    reached = resolve;
  });
  const serverStream = async () => {
    const got: number[] = [];
    for await (const res of one.streamingOutputCall(
      {
        responseParameters: Array.from({ length: STREAM_MESSAGES }, () => ({
          size: 2,
          intervalUs: STREAM_INTERVAL_MS * 1000,
        })),
      },
      options("server"),
    )) {
      got.push(indexOf(res.payload?.body));
      if (got.length === killAt) reached();
    }
    return sequenceProblem(got, STREAM_MESSAGES) ?? "whole";
  };
  const clientStream = async () => {
    const res = await two.streamingInputCall(
      numbered(STREAM_MESSAGES, STREAM_INTERVAL_MS),
      options("client"),
    );
    return res.aggregatedPayloadSize === STREAM_MESSAGES
      ? "whole"
      : `${res.aggregatedPayloadSize} of ${STREAM_MESSAGES}`;
  };
  const bidi = async () => {
    const got: number[] = [];
    for await (const res of one.fullDuplexCall(
      numbered(STREAM_MESSAGES, STREAM_INTERVAL_MS),
      options("bidi"),
    )) {
      got.push(indexOf(res.payload?.body));
    }
    return sequenceProblem(got, STREAM_MESSAGES) ?? "whole";
  };
  const calls: Record<string, Promise<Outcome<string>>> = {
    server: outcome(serverStream()),
    client: outcome(clientStream()),
    bidi: outcome(bidi()),
  };
  // Unary calls are started at the failover: their handlers (1.5 s) span it.
  const unaries = started.then(() =>
    Promise.all(
      [1, 2, 3, 4].map((i) =>
        outcome(
          (i % 2 === 1 ? one : two)
            .unaryCall({ responseSize: i }, options(`unary${i}`))
            .then((r) => (r.payload?.body.byteLength === i ? "whole" : "wrong size")),
        ),
      ),
    ),
  );
  return { started, calls, unaries };
}

/** How each call ended, by name: "whole" for one that completed with everything in it. */
async function endings(
  flight: ReturnType<typeof callsInFlight>,
  label: string,
): Promise<Record<string, string>> {
  const result: Record<string, string> = {};
  const all: Array<[string, Outcome<string>]> = [
    ...(await Promise.all(
      Object.entries(flight.calls).map(async ([k, p]) => [k, await p] as [string, Outcome<string>]),
    )),
    ...(await flight.unaries).map((o, i) => [`unary${i + 1}`, o] as [string, Outcome<string>]),
  ];
  for (const [name, o] of all) {
    result[name] = o.ok ? (o.value ?? "") : codeName(o.code);
    console.log(`${label}, ${name}: ${o.ok ? `${o.value}, ` : ""}${describeOutcome(o)}`);
  }
  return result;
}

const WHOLE = {
  server: "whole",
  client: "whole",
  bidi: "whole",
  unary1: "whole",
  unary2: "whole",
  unary3: "whole",
  unary4: "whole",
};

describe.runIf(RUN)("an edge Mosquitto bridged to a cloud Mosquitto", () => {
  const closer = new Closer();
  afterEach(() => closer.closeAll());

  async function device(bridge: MosquittoBridge, serverId: string, runs: Map<string, number>) {
    const server = await createMqttServer({
      serverId,
      mqtt: { url: bridge.edge.url, reconnectPeriod: 200 },
      shutdownTimeoutMs: 0,
      routes: (s) => s.service(TestService, ledgerService(runs, 1500)),
    });
    return closer.add(server, (s) => s.close());
  }

  function caller(
    bridge: MosquittoBridge,
    options: Partial<MqttTransportOptions> & { serverId: string },
  ): Client<typeof TestService> {
    const transport = createMqttTransport({
      mqtt: { url: bridge.cloud.url, reconnectPeriod: 200 },
      ...options,
    });
    closer.add(transport, (t) => t.close());
    return createClient(TestService, transport);
  }

  for (const bridgeProtocol of ["mqttv311", "mqttv50"] as const) {
    const documented = bridgeProtocol === "mqttv311";
    describe(`over ${documented ? "the documented MQTT 3.1.1 bridge" : "an MQTT 5 bridge"}`, () => {
      let bridge: MosquittoBridge;
      beforeAll(async () => {
        bridge = await startMosquittoBridge({ bridgeProtocol });
      });
      afterAll(() => bridge?.stop());

      it("carries all four kinds between a device on the edge broker and callers on the cloud broker", async () => {
        const serverId = uniqueServerId("bridge-kinds");
        const runs = new Map<string, number>();
        await device(bridge, serverId, runs);
        // The caller finds the device online through its retained presence,
        // published on the edge broker and read on the cloud broker.
        const client = caller(bridge, { serverId });
        const headers = (call: string) => ({ headers: { [CALL]: call }, timeoutMs: 15_000 });
        const unary = await client.unaryCall({ responseSize: 3 }, headers("unary"));
        const streamed: number[] = [];
        for await (const r of client.streamingOutputCall(
          { responseParameters: Array.from({ length: 100 }, () => ({ size: 2 })) },
          headers("server"),
        )) {
          streamed.push(indexOf(r.payload?.body));
        }
        const uploaded = await client.streamingInputCall(numbered(100, 0), headers("client"));
        const echoed: number[] = [];
        for await (const r of client.fullDuplexCall(numbered(100, 0), headers("bidi"))) {
          echoed.push(indexOf(r.payload?.body));
        }
        expect({
          unary: unary.payload?.body.byteLength,
          server: sequenceProblem(streamed, 100) ?? "whole",
          client: uploaded.aggregatedPayloadSize,
          bidi: sequenceProblem(echoed, 100) ?? "whole",
          runs: [...runs.values()],
        }).toEqual({ unary: 3, server: "whole", client: 100, bidi: "whole", runs: [1, 1, 1, 1] });
      });

      it("carries presence and last wills: a device killed on the edge is offline for callers on the cloud, retained there", async () => {
        const serverId = uniqueServerId("bridge-will");
        const child = closer.add(
          await ChildServer.start(
            { url: bridge.edge.url, protocolVersion: 4, serverId, handlerMs: 60_000 },
            "device",
          ),
          (d) => d.kill(),
        );
        const client = caller(bridge, { serverId, offlineGraceMs: 500 });
        await client.unaryCall({ responseSize: 0 }, { timeoutMs: 10_000 });
        const inFlight = outcome(client.unaryCall({ responseSize: 7 }, { timeoutMs: 30_000 }));
        await child.until((e) => e.event === "started");
        await child.kill();
        const o = await within(inFlight, 20_000, "the call in flight to end");
        // A caller that comes later reads the will, retained on the cloud
        // broker: the bridge kept the retain flag.
        const observer = closer.add(await PresenceObserver.start(bridge.cloud.url, serverId), (p) =>
          p.close(),
        );
        await within(
          observer.untilState(child.instanceId, Presence_State.DISCONNECTED),
          10_000,
          "the retained will DISCONNECTED on the cloud broker",
        );
        const next = await outcome(
          caller(bridge, { serverId }).unaryCall({}, { timeoutMs: 10_000 }),
        );
        console.log(
          `${bridgeProtocol} bridge, will: in flight ${describeOutcome(o)}; a later caller ${describeOutcome(next)}`,
        );
        expect({ inFlight: codeName(o.code), next: codeName(next.code) }).toEqual({
          inFlight: "Unavailable",
          next: "Unavailable",
        });
      });

      // The faults run on the documented bridge only: each costs 15-25 s.
      if (!documented) return;

      it(`the bridge link down for ${LINK_DOWN_MS / 1000} s under calls of every kind: each completes whole within its deadline, its handler ran once`, async () => {
        const serverId = uniqueServerId("bridge-drop");
        const runs = new Map<string, number>();
        await device(bridge, serverId, runs);
        const clients = [caller(bridge, { serverId }), caller(bridge, { serverId })] as const;
        await clients[0].unaryCall(
          { responseSize: 0 },
          { headers: { [CALL]: "probe" }, timeoutMs: 10_000 },
        );
        const flight = callsInFlight(clients, "drop", 50);
        await within(flight.started, 20_000, "50 messages of the server stream");
        bridge.link!.refuse(true);
        bridge.link!.resetAll();
        await within(bridge.untilUnbridged(), 10_000, "the edge broker to see the bridge down");
        // The fault's length is the subject: the link stays down this long.
        await sleep(LINK_DOWN_MS);
        bridge.link!.refuse(false);
        await within(bridge.untilBridged(), 20_000, "the bridge to reconnect");
        const ended = await within(
          endings(flight, `${bridgeProtocol} link drop`),
          FAULT_DEADLINE_MS + 10_000,
          "every call to end",
        );
        const after = await outcome(
          clients[1].unaryCall(
            { responseSize: 0 },
            { headers: { [CALL]: "after" }, timeoutMs: 10_000 },
          ),
        );
        expect({
          ended,
          after: codeName(after.code),
          ranOtherThanOnce: [...runs].filter(([, count]) => count !== 1),
        }).toEqual({ ended: WHOLE, after: "OK", ranOtherThanOnce: [] });
      }, 120_000);

      it("the edge broker restarted under calls of every kind: each completes whole within its deadline, its handler ran once", async () => {
        const serverId = uniqueServerId("bridge-restart");
        const runs = new Map<string, number>();
        await device(bridge, serverId, runs);
        const clients = [caller(bridge, { serverId }), caller(bridge, { serverId })] as const;
        await clients[0].unaryCall(
          { responseSize: 0 },
          { headers: { [CALL]: "probe" }, timeoutMs: 10_000 },
        );
        const flight = callsInFlight(clients, "restart", 50);
        await within(flight.started, 20_000, "50 messages of the server stream");
        await bridge.edge.restart();
        await within(bridge.untilBridged(), 20_000, "the bridge to reconnect");
        const ended = await within(
          endings(flight, `${bridgeProtocol} edge restart`),
          FAULT_DEADLINE_MS + 10_000,
          "every call to end",
        );
        const after = await outcome(
          clients[1].unaryCall(
            { responseSize: 0 },
            { headers: { [CALL]: "after" }, timeoutMs: 10_000 },
          ),
        );
        expect({
          ended,
          after: codeName(after.code),
          ranOtherThanOnce: [...runs].filter(([, count]) => count !== 1),
        }).toEqual({ ended: WHOLE, after: "OK", ranOtherThanOnce: [] });
      }, 120_000);
    });
  }
});
