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
import { setTimeout as sleep } from "node:timers/promises";
import { type Client, createClient } from "@connectrpc/connect";
import { createMqttServer, createMqttTransport, type MqttTransportOptions } from "@mqrpc/runtime";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { mosquittoAvailable } from "./brokers/mosquitto.js";
import { type MosquittoBridge, startMosquittoBridge } from "./brokers/mosquitto-bridge.js";
import { brokerSelection, kindSelected } from "./brokers/selection.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import {
  CALL_HEADER,
  callsInFlight,
  endings,
  everyKind,
  ledgerService,
} from "./support/calls-in-flight.js";
import { ChildServer } from "./support/child-server-process.js";
import { codeName, describeOutcome, outcome, within } from "./support/outcome.js";
import { Presence_State, PresenceObserver } from "./support/presence-observer.js";
import { Closer, uniqueServerId } from "./support/rpc-fixture.js";

/** Runs where mosquitto is installed, and fails where MQRPC_REQUIRE_BROKERS asks for it and it is not. */
const RUN = mosquittoAvailable() || (brokerSelection().required && kindSelected("mosquitto"));

/** Deadline of the calls in flight at a fault: a bound, not an expectation. */
const FAULT_DEADLINE_MS = 60_000;
/** How long the bridge's link stays down. */
const LINK_DOWN_MS = 10_000;

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
        expect({ ...(await everyKind(client, 100)), runs: [...runs.values()] }).toEqual({
          unary: 3,
          server: "whole",
          client: 100,
          bidi: "whole",
          runs: [1, 1, 1, 1],
        });
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

      /**
       * Calls of every kind in flight to a device on the edge broker when
       * `fault` strikes (once the server stream has delivered 50 messages):
       * how each ended, whether a call after works, and which handler ran
       * other than once.
       */
      async function underFault(tag: string, label: string, fault: () => Promise<void>) {
        const serverId = uniqueServerId(`bridge-${tag}`);
        const runs = new Map<string, number>();
        await device(bridge, serverId, runs);
        const clients = [caller(bridge, { serverId }), caller(bridge, { serverId })] as const;
        await clients[0].unaryCall(
          { responseSize: 0 },
          { headers: { [CALL_HEADER]: "probe" }, timeoutMs: 10_000 },
        );
        const flight = callsInFlight(clients, tag, 50, FAULT_DEADLINE_MS);
        await within(flight.started, 20_000, "50 messages of the server stream");
        await fault();
        const ended = await within(
          endings(flight, `${bridgeProtocol} ${label}`),
          FAULT_DEADLINE_MS + 10_000,
          "every call to end",
        );
        const after = await outcome(
          clients[1].unaryCall(
            { responseSize: 0 },
            { headers: { [CALL_HEADER]: "after" }, timeoutMs: 10_000 },
          ),
        );
        return {
          ended,
          after: codeName(after.code),
          ranOtherThanOnce: [...runs].filter(([, count]) => count !== 1),
        };
      }

      it(`the bridge link down for ${LINK_DOWN_MS / 1000} s under calls of every kind: each completes whole within its deadline, its handler ran once`, async () => {
        const result = await underFault("drop", "link drop", async () => {
          bridge.link!.refuse(true);
          bridge.link!.resetAll();
          await within(bridge.untilUnbridged(), 10_000, "the edge broker to see the bridge down");
          // The fault's length is the subject: the link stays down this long.
          await sleep(LINK_DOWN_MS);
          bridge.link!.refuse(false);
          await within(bridge.untilBridged(), 20_000, "the bridge to reconnect");
        });
        expect(result).toEqual({ ended: WHOLE, after: "OK", ranOtherThanOnce: [] });
      }, 120_000);

      it("the edge broker restarted under calls of every kind: each completes whole within its deadline, its handler ran once", async () => {
        const result = await underFault("restart", "edge restart", async () => {
          await bridge.edge.restart();
          await within(bridge.untilBridged(), 20_000, "the bridge to reconnect");
        });
        expect(result).toEqual({ ended: WHOLE, after: "OK", ranOtherThanOnce: [] });
      }, 120_000);
    });
  }
});
