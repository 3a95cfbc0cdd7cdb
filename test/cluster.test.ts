/**
 * mqrpc across a broker cluster: three NATS nodes clustered by routes, with
 * JetStream and an MQTT listener on each (test/brokers/nats-cluster.ts). A
 * device server on one node, callers on the two others, each given all
 * three nodes (MQTT.js `servers`, tried in turn on every reconnect).
 *
 * - All four RPC kinds cross nodes, and so do retained presence and last
 *   wills (a device that dies while its node lives).
 * - A node killed under calls in flight of every kind, with one device on
 *   it (its callers on the other nodes) and the callers of another device
 *   on it: both devices and all callers fail over to the other nodes. The
 *   node killed is the JetStream meta leader, the slowest failover. Every
 *   call completes whole or ends with a status within its deadline (which
 *   depends on how long NATS takes, see ACCEPTED_ENDINGS), no handler runs
 *   twice, and the devices answer new calls afterwards. On nats-server 2.9
 *   the last needed the link to subscribe again after every reconnect: NATS
 *   can resume a session on another node without a subscription it could
 *   not restore (mqtt-link-resubscribe.test.ts, docs/DEPLOYMENT.md).
 *
 * Heartbeats stay at their default, 10 s: a NATS failover keeps a session's
 * subscriptions deaf for 5 to 30 s and more here (JetStream elects leaders;
 * every JetStream request in between waits 4 s), and a shorter interval
 * would end calls that survive it (UNAVAILABLE after 3 or 4 silent
 * intervals).
 */
import { createClient, createContextValues } from "@connectrpc/connect";
import {
  createMqttServer,
  createMqttTransport,
  type MqttServer,
  type MqttTransport,
  type MqttTransportOptions,
  waitForServerKey,
} from "@mqrpc/runtime";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { natsAvailable } from "./brokers/nats.js";
import {
  type NatsCluster,
  type NatsClusterNode,
  startNatsCluster,
} from "./brokers/nats-cluster.js";
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

/** Runs where nats-server is installed, and fails where MQRPC_REQUIRE_BROKERS asks for it and it is not. */
const RUN = natsAvailable() || (brokerSelection().required && kindSelected("nats"));

/**
 * Deadline of the calls in flight at a failover: a bound, not an
 * expectation. They took 10-45 s in most runs here: the failover (until
 * every subscription works again), then up to two heartbeat intervals until
 * a stalled stream's peer asks for what it lost.
 */
const FAILOVER_DEADLINE_MS = 90_000;
/** Deadline of the calls made after a failover (they wait for the device: `waitForServer`). */
const AFTER_DEADLINE_MS = 60_000;
/**
 * How a call in flight at a failover may end: whole, or with the status of
 * a server it lost (UNAVAILABLE: its will said DISCONNECTED for longer than
 * `offlineGraceMs`, or it stopped answering heartbeats) or its deadline.
 * On nats-server 2.9 JetStream took from 5 s to over a minute to serve
 * MQTT sessions again after a node was killed here (2 busy cores), so
 * which of these a call gets depends on the broker, not on mqrpc. What may
 * never happen: a call that hangs, a stream cut short that looks complete,
 * another status, a handler that runs twice, a device deaf after the
 * failover.
 */
const ACCEPTED_ENDINGS = ["whole", "Unavailable", "DeadlineExceeded"];

/** MQTT.js options for a client of the cluster that tries `first`, then the other nodes in order. */
function viaNodes(cluster: NatsCluster, first: NatsClusterNode, clientId?: string) {
  const nodes = cluster.nodes;
  const start = nodes.indexOf(first);
  const order = [0, 1, 2].map((i) => nodes[(start + i) % 3] as NatsClusterNode);
  return {
    url: first.url,
    servers: order.map((n) => ({ host: "127.0.0.1", port: n.port })),
    protocolVersion: 4 as const,
    reconnectPeriod: 200,
    ...(clientId !== undefined ? { clientId } : {}),
  };
}

/** Nodes other than `node`, in cluster order. */
function others(cluster: NatsCluster, node: NatsClusterNode): [NatsClusterNode, NatsClusterNode] {
  return cluster.nodes.filter((n) => n !== node) as [NatsClusterNode, NatsClusterNode];
}

describe.runIf(RUN)("a NATS cluster of three nodes", () => {
  const closer = new Closer();
  afterEach(() => closer.closeAll());

  function server(
    cluster: NatsCluster,
    node: NatsClusterNode,
    serverId: string,
    runs: Map<string, number>,
  ): Promise<MqttServer> {
    return createMqttServer({
      serverId,
      mqtt: viaNodes(cluster, node),
      shutdownTimeoutMs: 0,
      routes: (s) => s.service(TestService, ledgerService(runs, 1500)),
    }).then((s) => closer.add(s, (x) => x.close()));
  }

  function transport(
    cluster: NatsCluster,
    node: NatsClusterNode,
    options: Partial<MqttTransportOptions> & { serverId: string },
    clientId?: string,
  ): MqttTransport {
    const t = createMqttTransport({ mqtt: viaNodes(cluster, node, clientId), ...options });
    return closer.add(t, (x) => x.close());
  }

  describe("clustered by routes, JetStream and MQTT on every node", () => {
    let cluster: NatsCluster;
    beforeAll(async () => {
      cluster = await startNatsCluster();
    }, 60_000);
    afterAll(() => cluster?.stop());

    it("carries all four kinds between a device on one node and callers on the two others", async () => {
      const [a, b, c] = cluster.nodes;
      const serverId = uniqueServerId("cluster-kinds");
      const runs = new Map<string, number>();
      await server(cluster, a, serverId, runs);
      // The callers find the device online through its retained presence,
      // published on node a and read on b and c.
      for (const [node, tag] of [
        [b, "b"],
        [c, "c"],
      ] as const) {
        const client = createClient(TestService, transport(cluster, node, { serverId }));
        expect(await everyKind(client, 50, tag)).toEqual({
          unary: 3,
          server: "whole",
          client: 50,
          bidi: "whole",
        });
      }
      expect([...runs.values()].every((n) => n === 1)).toBe(true);
      expect(runs.size).toBe(8);
    }, 60_000);

    it("carries presence and last wills across nodes: a device that dies fails calls from another node fast", async () => {
      const [a, b, c] = cluster.nodes;
      const serverId = uniqueServerId("cluster-will");
      const device = closer.add(
        await ChildServer.start(
          { url: a.url, protocolVersion: 4, serverId, handlerMs: 60_000 },
          "device",
        ),
        (d) => d.kill(),
      );
      const observer = closer.add(await PresenceObserver.start(c.url, serverId), (o) => o.close());
      await within(
        observer.untilState(device.instanceId, Presence_State.ONLINE),
        10_000,
        "ONLINE on node c",
      );
      const client = createClient(
        TestService,
        transport(cluster, b, { serverId, offlineGraceMs: 500, heartbeatMs: 10_000 }),
      );
      await client.unaryCall({ responseSize: 0 }, { timeoutMs: 10_000 });
      // A call in flight when the device dies: its will (published by node
      // a, which lives) reaches the caller on node b.
      const inFlight = outcome(client.unaryCall({ responseSize: 7 }, { timeoutMs: 30_000 }));
      await device.until((e) => e.event === "started");
      await device.kill();
      await within(
        observer.untilState(device.instanceId, Presence_State.DISCONNECTED),
        10_000,
        "the will DISCONNECTED on node c",
      );
      const o = await within(inFlight, 20_000, "the call in flight to end");
      const next = await outcome(client.unaryCall({ responseSize: 0 }, { timeoutMs: 10_000 }));
      console.log(
        `will across nodes: in flight ${describeOutcome(o)}; next ${describeOutcome(next)}`,
      );
      expect({ inFlight: codeName(o.code), next: codeName(next.code) }).toEqual({
        inFlight: "Unavailable",
        next: "Unavailable",
      });
    }, 60_000);

    it("a node killed under calls in flight (a device's, and other callers'): every call completes whole or ends with a status within its deadline, no handler runs twice, and the devices answer new calls after", async () => {
      // The JetStream meta leader: the slowest failover.
      const killed = cluster.metaLeader();
      expect(killed, "a JetStream meta leader").toBeDefined();
      const k = killed as NatsClusterNode;
      const [x, y] = others(cluster, k);
      // Two devices: one on the node killed (its callers on the two others),
      // one on another node (both its callers on the node killed). Of each
      // pair of callers, one keeps its session across reconnects (a client
      // id of its own) and the other gets clean sessions (a random id).
      const scenarios = [
        { name: "device's node killed", device: k, callers: [x, y] },
        { name: "callers' node killed", device: x, callers: [k, k] },
      ] as const;
      // As docs/DEPLOYMENT.md advises for NATS clusters: a device whose
      // connection its node closes during the failover (it closes MQTT
      // connections whose QoS 1 publishes JetStream cannot store) is
      // announced DISCONNECTED by its will, and takes longer than the
      // default 3 s to be back.
      const options = { offlineGraceMs: 30_000 };
      const started = await Promise.all(
        scenarios.map(async (scenario, n) => {
          const serverId = uniqueServerId(`cluster-kill-${n}`);
          const runs = new Map<string, number>();
          await server(cluster, scenario.device, serverId, runs);
          const tag = `kill${n}`;
          const clients = [
            createClient(
              TestService,
              transport(
                cluster,
                scenario.callers[0],
                { serverId, ...options },
                `caller-${tag}-${process.pid}`,
              ),
            ),
            createClient(
              TestService,
              transport(cluster, scenario.callers[1], { serverId, ...options }),
            ),
          ] as const;
          for (const [i, client] of clients.entries()) {
            await client.unaryCall(
              { responseSize: 0 },
              { headers: { [CALL_HEADER]: `${tag}-probe${i}` }, timeoutMs: 15_000 },
            );
          }
          const flight = callsInFlight(clients, tag, 50, FAILOVER_DEADLINE_MS);
          await within(
            flight.started,
            20_000,
            `50 messages of the server stream (${scenario.name})`,
          );
          return { scenario, tag, runs, clients, flight };
        }),
      );
      await k.kill();
      const results = await Promise.all(
        started.map(async ({ scenario, tag, runs, clients, flight }) => {
          const ended = await within(
            endings(flight, scenario.name),
            FAILOVER_DEADLINE_MS + 10_000,
            `every call to end (${scenario.name})`,
          );
          // New calls from both callers reach the device after the failover
          // (waiting for it if its presence says it is not back yet).
          const after = await Promise.all(
            clients.map((client, i) =>
              outcome(
                client.unaryCall(
                  { responseSize: 0 },
                  {
                    headers: { [CALL_HEADER]: `${tag}-after${i}` },
                    timeoutMs: AFTER_DEADLINE_MS,
                    contextValues: createContextValues().set(waitForServerKey, true),
                  },
                ),
              ),
            ),
          );
          console.log(`${scenario.name}: after: ${after.map(describeOutcome).join(", ")}`);
          return {
            scenario: scenario.name,
            endedAs: Object.values(ended).filter((e) => !ACCEPTED_ENDINGS.includes(e)),
            after: after.map((o) => codeName(o.code)),
            ranMoreThanOnce: [...runs].filter(([, count]) => count > 1),
            // The probes and the calls after always run; of the calls in
            // flight, every one that completed.
            ranAtLeast: runs.size >= 4 + Object.values(ended).filter((e) => e === "whole").length,
          };
        }),
      );
      console.log(`node ${k.name} killed: ${JSON.stringify(results)}`);
      expect(results).toEqual(
        scenarios.map((s) => ({
          scenario: s.name,
          endedAs: [],
          after: ["OK", "OK"],
          ranMoreThanOnce: [],
          ranAtLeast: true,
        })),
      );
    }, 200_000);
  });
});
