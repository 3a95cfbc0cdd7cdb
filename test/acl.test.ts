/**
 * The documented Mosquitto setup (docs/mosquitto.conf: client id = username;
 * docs/mosquitto-acl.conf) binds each account to its own topics: another
 * account can neither take its client id, read its replies nor inject
 * frames into its calls, a server cannot answer for another, and a caller
 * without publish rights on a method gets PERMISSION_DENIED on MQTT 5 (and
 * its deadline on 3.1.1, where brokers drop refused publishes silently).
 */
import { readFileSync } from "node:fs";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createMqttServer } from "@mqrpc/runtime";
import { connectAsync } from "mqtt";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Presence_State } from "../packages/runtime/src/gen/mqrpc/v1/wire_pb.js";
import { encodePresence } from "../packages/runtime/src/link/presence.js";
import { decodeCallFrames } from "../packages/runtime/src/wire/frame-codec.js";
import { TopicScheme } from "../packages/runtime/src/wire/topic-scheme.js";
import { type MosquittoBroker, mosquittoAvailable, startMosquitto } from "./brokers/mosquitto.js";
import type { BrokerTarget } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { documentedAcl, emptyCallOnlyAcl, forgedEnd, users } from "./support/documented-acl.js";
import { interopService } from "./support/interop-service.js";
import { Closer, deferred, startServer, startTransport } from "./support/rpc-fixture.js";

/** The shipped listener settings that are not paths or ports (the test broker has its own). */
const shippedListener = readFileSync(new URL("../docs/mosquitto.conf", import.meta.url), "utf8")
  .split("\n")
  .filter((line) => /^(allow_anonymous|use_username_as_clientid)\b/.test(line))
  .join("\n");
const SERVER = "dev-42";
const scheme = new TopicScheme();

describe.runIf(mosquittoAvailable())("Mosquitto ACLs", () => {
  let broker: MosquittoBroker;
  let restricted: MosquittoBroker;
  const closer = new Closer();
  beforeAll(async () => {
    expect(shippedListener).toContain("use_username_as_clientid true");
    broker = await startMosquitto({ acl: documentedAcl, users, extraConfig: shippedListener });
    restricted = await startMosquitto({
      acl: emptyCallOnlyAcl,
      users,
      extraConfig: shippedListener,
    });
  });
  afterEach(() => closer.closeAll());
  afterAll(async () => {
    await broker.stop();
    await restricted.stop();
  });

  for (const protocolVersion of [4, 5] as const) {
    describe(`MQTT ${protocolVersion === 4 ? "3.1.1" : "5"}`, () => {
      const target = (b: MosquittoBroker): BrokerTarget => ({
        name: "mosquitto-acl",
        kind: "mosquitto",
        url: b.url,
        mqttOptions: { protocolVersion },
        sharedSubscriptions: true,
      });
      /** An account's connection options; mqrpc uses the username as client id. */
      const as = (b: MosquittoBroker, username: keyof typeof users) => ({
        url: b.url,
        protocolVersion,
        username,
        password: users[username],
        reconnectPeriod: 200,
      });
      /** Raw MQTT.js needs the client id spelled out to use it in topics. */
      const raw = (
        b: MosquittoBroker,
        username: keyof typeof users,
        clientId: string = username,
      ) => ({
        ...as(b, username),
        clientId,
      });

      /** Alice's client of the server `SERVER` on `b`. */
      const aliceOn = (b: MosquittoBroker) =>
        createClient(
          TestService,
          startTransport(closer, target(b), { serverId: SERVER, mqtt: as(b, "alice") }),
        );

      async function serve(b: MosquittoBroker) {
        const server = await startServer(closer, target(b), {
          serverId: SERVER,
          mqtt: as(b, "dev-42"),
        });
        server.service(TestService, interopService);
        return server;
      }

      it("lets a caller call, and keeps another client out of its replies and its calls", async () => {
        await serve(broker);
        const aliceId = "alice";
        const alice = aliceOn(broker);
        await alice.emptyCall({});

        // Bob tries to read Alice's replies.
        const bob = closer.add(await connectAsync(broker.url, raw(broker, "bob")), (c) =>
          c.endAsync(),
        );
        const stolen: string[] = [];
        bob.on("message", (topic) => stolen.push(topic));
        // Mosquitto grants the subscription and applies the read ACL to each
        // message, so the proof is that nothing arrives (checked below).
        await bob.subscribeAsync(scheme.replyFilter(aliceId), { qos: 1 });
        await bob.subscribeAsync("mqrpc/c/#", { qos: 1 });

        // Bob tries to inject an End into Alice's calls and to call with Alice's key.
        const inject = [
          ...Array.from({ length: 20 }, (_, i) =>
            bob.publishAsync(scheme.replyTopic(aliceId, SERVER), forgedEnd(i + 1), { qos: 1 }),
          ),
          bob.publishAsync(
            scheme.requestTopic(SERVER, TestService.typeName, "EmptyCall", aliceId),
            forgedEnd(1),
            { qos: 1 },
          ),
        ];
        const outcomes = await Promise.allSettled(inject);
        if (protocolVersion === 5) {
          // MQTT 5 says so: PUBACK "not authorized".
          expect(outcomes.every((o) => o.status === "rejected")).toBe(true);
        }
        // Alice's calls are untouched, and Bob saw none of her replies.
        const results = await Promise.all(
          Array.from({ length: 20 }, () => alice.unaryCall({ responseSize: 8 })),
        );
        expect(results.every((r) => r.payload?.body.byteLength === 8)).toBe(true);
        expect(stolen).toEqual([]);
      });

      it("an account cannot take another's client id: the caller and the server stay connected, their topics private", async () => {
        const serverLink = closer.add(await connectAsync(broker.url, raw(broker, "dev-42")), (c) =>
          c.endAsync(),
        );
        const aliceLink = closer.add(await connectAsync(broker.url, raw(broker, "alice")), (c) =>
          c.endAsync(),
        );
        const server = await startServer(closer, target(broker), {
          serverId: SERVER,
          mqtt: serverLink,
        });
        server.service(TestService, interopService);
        const alice = createClient(
          TestService,
          startTransport(closer, target(broker), { serverId: SERVER, mqtt: aliceLink }),
        );
        await alice.emptyCall({});
        const dropped: string[] = [];
        serverLink.on("close", () => dropped.push("server"));
        aliceLink.on("close", () => dropped.push("alice"));

        // Bob connects as Alice's client id, then as the server's.
        const stolen: string[] = [];
        for (const victim of ["alice", "dev-42"]) {
          const bob = closer.add(await connectAsync(broker.url, raw(broker, "bob", victim)), (c) =>
            c.endAsync(),
          );
          bob.on("message", (topic) => stolen.push(topic));
          await bob.subscribeAsync(scheme.replyFilter(victim), { qos: 1 });
          await bob.subscribeAsync(scheme.requestFilter(SERVER), { qos: 1 });
        }
        const results = await Promise.all(
          Array.from({ length: 20 }, () => alice.unaryCall({ responseSize: 8 })),
        );
        expect(results.every((r) => r.payload?.body.byteLength === 8)).toBe(true);
        expect(dropped).toEqual([]);
        expect(stolen).toEqual([]);
      });

      it("a transport whose client id is not its username is told why the broker refuses it", async () => {
        await serve(broker);
        const alice = createClient(
          TestService,
          startTransport(closer, target(broker), {
            serverId: SERVER,
            mqtt: { ...as(broker, "alice"), clientId: "alice-phone" },
          }),
        );
        const err = await alice.emptyCall({}, { timeoutMs: 1500 }).then(
          () => undefined,
          (e: unknown) => ConnectError.from(e),
        );
        // MQTT 5 says why; MQTT 3.1.1 brokers drop refused publishes silently.
        if (protocolVersion === 5) {
          expect(err?.code).toBe(Code.PermissionDenied);
          expect(err?.message).toContain("use_username_as_clientid");
        } else {
          expect(err?.code).toBe(Code.DeadlineExceeded);
        }
      });

      // MQTT 3.1.1 cannot refuse a publish: there is nothing to test.
      if (protocolVersion === 5) {
        it("a server whose presence the broker refuses does not resolve as announced", async () => {
          // Bob may not announce dev-42: createMqttServer({ routes }) resolves
          // only once the broker acknowledged the ONLINE presence.
          await expect(
            createMqttServer({
              serverId: SERVER,
              mqtt: as(broker, "bob"),
              routes: (s) => s.service(TestService, interopService),
            }),
          ).rejects.toThrow(/not authorized|0x87|135/i);
        });
      }

      it("a server cannot forge replies to calls made to another server, even knowing the call ids", async () => {
        // dev-43 is compromised: it sees the caller's call ids in the calls
        // made to it, and tries to answer the caller's calls to dev-42.
        const release = deferred();
        const server = await startServer(closer, target(broker), {
          serverId: SERVER,
          mqtt: as(broker, "dev-42"),
        });
        server.service(TestService, {
          async unaryCall() {
            await release.promise;
            return { payload: { body: new Uint8Array(8).fill(42) } };
          },
        });
        const attacker = closer.add(await connectAsync(broker.url, raw(broker, "dev-43")), (c) =>
          c.endAsync(),
        );
        const seenIds: number[] = [];
        attacker.on("message", (_topic, payload) => {
          for (const frame of decodeCallFrames(payload)) seenIds.push(frame.callId);
        });
        await attacker.subscribeAsync("mqrpc/s/dev-43/#", { qos: 1 });
        await attacker.publishAsync(
          scheme.presenceTopic("dev-43", "dev-43"),
          Buffer.from(encodePresence("dev-43", Presence_State.ONLINE, false, 1)),
          { qos: 1, retain: true },
        );
        // One connection for Alice, two transports: one router, one sequence of call ids.
        const aliceId = "alice";
        const aliceLink = closer.add(await connectAsync(broker.url, raw(broker, "alice")), (c) =>
          c.endAsync(),
        );
        const toOther = createClient(
          TestService,
          startTransport(closer, target(broker), { serverId: "dev-43", mqtt: aliceLink }),
        );
        const toDevice = createClient(
          TestService,
          startTransport(closer, target(broker), { serverId: SERVER, mqtt: aliceLink }),
        );
        await toOther.emptyCall({}, { timeoutMs: 300 }).catch(() => {});
        expect(seenIds.length).toBeGreaterThan(0);
        const next = Math.max(...seenIds) + 1;
        const calls = Array.from({ length: 10 }, () =>
          toDevice.unaryCall({}, { timeoutMs: 15_000 }),
        );
        // Forged Ends for the ids Alice uses next, on dev-42's reply topic
        // (the ACL refuses) and on dev-43's own (allowed, but not dev-42's).
        const ownTopic = scheme.replyTopic(aliceId, "dev-43");
        let arrived = 0;
        aliceLink.on("message", (topic) => {
          if (topic === ownTopic) arrived++;
        });
        const denied = await Promise.allSettled(
          Array.from({ length: 10 }, (_, i) =>
            attacker.publishAsync(scheme.replyTopic(aliceId, SERVER), forgedEnd(next + i), {
              qos: 1,
            }),
          ),
        );
        if (protocolVersion === 5) expect(denied.every((o) => o.status === "rejected")).toBe(true);
        for (let i = 0; i < 10; i++) {
          await attacker.publishAsync(ownTopic, forgedEnd(next + i), { qos: 1 });
        }
        await expect.poll(() => arrived).toBe(10);
        release.resolve();
        const results = await Promise.all(calls);
        expect(results.map((r) => r.payload?.body[0])).toEqual(new Array(10).fill(42));
        await attacker.publishAsync(scheme.presenceTopic("dev-43", "dev-43"), Buffer.alloc(0), {
          qos: 1,
          retain: true,
        });
      });

      it("a caller without publish rights on a method gets a clear error", async () => {
        await serve(restricted);
        const alice = aliceOn(restricted);
        await alice.emptyCall({});
        const err = await alice
          .unaryCall({}, { timeoutMs: 1500 })
          .catch((e: unknown) => ConnectError.from(e));
        expect(err).toBeInstanceOf(ConnectError);
        expect((err as ConnectError).code).toBe(
          protocolVersion === 5 ? Code.PermissionDenied : Code.DeadlineExceeded,
        );
      });
    });
  }
});
