/**
 * Unary calls end to end on every broker target, including the gRPC interop
 * cases that apply to unary.
 */
import {
  Code,
  ConnectError,
  createClient,
  createContextValues,
  encodeBinaryHeader,
} from "@connectrpc/connect";
import { createMqttServer, createMqttTransport, waitForServerKey } from "@mqrpc/runtime";
import { connectAsync, type MqttClient } from "mqtt";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { encodeFrame } from "../packages/runtime/src/wire/frame-codec.js";
import { TopicScheme } from "../packages/runtime/src/wire/topic-scheme.js";
import { forEachBroker } from "./brokers/targets.js";
import {
  EchoStatusSchema,
  TestService,
  UnimplementedService,
} from "./gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "./support/interop-service.js";
import {
  Closer,
  deferred,
  mqttOptions,
  startServer,
  startTransport,
  uniqueServerId,
  untilAborted,
} from "./support/rpc-fixture.js";

function codeOf(e: unknown): Code {
  return ConnectError.from(e).code;
}

forEachBroker((target) => {
  describe("unary calls", () => {
    const closer = new Closer();
    let serverId: string;
    let client: ReturnType<typeof createClient<typeof TestService>>;

    beforeEach(async () => {
      serverId = uniqueServerId("interop");
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, interopService);
      client = createClient(TestService, startTransport(closer, target, { serverId }));
    });
    afterEach(() => closer.closeAll());

    it("empty_unary", async () => {
      const res = await client.emptyCall({});
      expect(res.$typeName).toBe("mqrpc.interop.v1.Empty");
    });

    it("large_unary: 271,828 bytes out, 314,159 bytes back (chunked both ways)", async () => {
      const body = new Uint8Array(271_828).map((_, i) => i % 251);
      const res = await client.unaryCall({ responseSize: 314_159, payload: { body } });
      expect(res.payload?.body.byteLength).toBe(314_159);
    });

    it("custom_metadata: text and -bin headers and trailers round-trip", async () => {
      let header: Headers | undefined;
      let trailer: Headers | undefined;
      const binary = new Uint8Array([0xab, 0xab, 0xab, 0x00, 0xff]);
      await client.unaryCall(
        { responseSize: 1 },
        {
          headers: {
            "x-grpc-test-echo-initial": "test_initial_metadata_value",
            "x-grpc-test-echo-trailing-bin": encodeBinaryHeader(binary),
          },
          onHeader: (h) => {
            header = h;
          },
          onTrailer: (t) => {
            trailer = t;
          },
        },
      );
      expect(header?.get("x-grpc-test-echo-initial")).toBe("test_initial_metadata_value");
      expect(trailer?.get("x-grpc-test-echo-trailing-bin")).toBe(encodeBinaryHeader(binary));
    });

    it("status_code_and_message", async () => {
      const err = await client
        .unaryCall({ responseStatus: { code: Code.Unknown, message: "test status message" } })
        .catch((e: unknown) => ConnectError.from(e));
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code).toBe(Code.Unknown);
      expect((err as ConnectError).rawMessage).toBe("test status message");
    });

    it("special_status_message", async () => {
      const message = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";
      const err = await client
        .unaryCall({ responseStatus: { code: Code.Unknown, message } })
        .catch((e: unknown) => ConnectError.from(e));
      expect((err as ConnectError).rawMessage).toBe(message);
    });

    it("unimplemented_method", async () => {
      const err = await client.unimplementedCall({}).catch((e: unknown) => e);
      expect(codeOf(err)).toBe(Code.Unimplemented);
    });

    it("unimplemented_service", async () => {
      const other = createClient(
        UnimplementedService,
        startTransport(closer, target, { serverId }),
      );
      const err = await other.unimplementedCall({}).catch((e: unknown) => e);
      expect(codeOf(err)).toBe(Code.Unimplemented);
      expect(ConnectError.from(err).rawMessage).toContain("mqrpc.interop.v1.UnimplementedService");
    });

    it("many concurrent calls on one connection each get their own response", async () => {
      const sizes = Array.from({ length: 200 }, (_, i) => (i * 37) % 1000);
      const results = await Promise.all(
        sizes.map((responseSize) => client.unaryCall({ responseSize })),
      );
      expect(results.map((r) => r.payload?.body.byteLength)).toEqual(sizes);
    });
  });

  describe("unary deadlines, cancellation and errors", () => {
    const closer = new Closer();
    afterEach(() => closer.closeAll());

    it("timeout_on_sleeping_server: DEADLINE_EXCEEDED for the caller, the handler's signal fires", async () => {
      const serverId = uniqueServerId("sleepy");
      const handlerAborted = deferred<unknown>();
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, {
        unaryCall: (_req, ctx) => untilAborted(ctx.signal, handlerAborted),
      });
      const client = createClient(TestService, startTransport(closer, target, { serverId }));
      const err = await client.unaryCall({}, { timeoutMs: 300 }).catch((e: unknown) => e);
      expect(codeOf(err)).toBe(Code.DeadlineExceeded);
      expect(codeOf(await handlerAborted.promise)).toBe(Code.DeadlineExceeded);
    });

    it("an aborted caller signal gives CANCELED and aborts the handler", async () => {
      const serverId = uniqueServerId("cancel");
      const started = deferred();
      const handlerAborted = deferred<unknown>();
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, {
        unaryCall: (_req, ctx) => {
          started.resolve();
          return untilAborted(ctx.signal, handlerAborted);
        },
      });
      const client = createClient(TestService, startTransport(closer, target, { serverId }));
      const controller = new AbortController();
      const call = client.unaryCall({}, { signal: controller.signal }).catch((e: unknown) => e);
      await started.promise;
      controller.abort();
      expect(codeOf(await call)).toBe(Code.Canceled);
      expect(codeOf(await handlerAborted.promise)).toBe(Code.Canceled);
    });

    it("handler errors keep code, message, details and metadata", async () => {
      const serverId = uniqueServerId("errors");
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, {
        unaryCall(_req, ctx) {
          ctx.responseTrailer.set("x-trailer", "kept");
          throw new ConnectError("no such sensor", Code.NotFound, { "x-error-meta": "m1" }, [
            { desc: EchoStatusSchema, value: { code: 7, message: "detail" } },
          ]);
        },
      });
      const client = createClient(TestService, startTransport(closer, target, { serverId }));
      const err = ConnectError.from(await client.unaryCall({}).catch((e: unknown) => e));
      expect(err.code).toBe(Code.NotFound);
      expect(err.rawMessage).toBe("no such sensor");
      expect(err.metadata.get("x-error-meta")).toBe("m1");
      expect(err.metadata.get("x-trailer")).toBe("kept");
      const details = err.findDetails(EchoStatusSchema);
      expect(details).toHaveLength(1);
      expect(details[0]?.message).toBe("detail");
      expect(details[0]?.code).toBe(7);
    });

    it("a thrown non-Connect error becomes UNKNOWN with its message", async () => {
      const serverId = uniqueServerId("throws");
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, {
        unaryCall() {
          throw new Error("sensor bus fault");
        },
      });
      const client = createClient(TestService, startTransport(closer, target, { serverId }));
      const err = ConnectError.from(await client.unaryCall({}).catch((e: unknown) => e));
      expect(err.code).toBe(Code.Unknown);
      expect(err.rawMessage).toBe("sensor bus fault");
    });
  });

  describe("presence", () => {
    const closer = new Closer();
    afterEach(() => closer.closeAll());

    it("a server that never announced itself fails fast with UNAVAILABLE, not at the deadline", async () => {
      const client = createClient(
        TestService,
        startTransport(closer, target, {
          serverId: uniqueServerId("nobody"),
          presenceTimeoutMs: 300,
        }),
      );
      const err = await client.emptyCall({}, { timeoutMs: 60_000 }).catch((e: unknown) => e);
      expect(codeOf(err)).toBe(Code.Unavailable);
      expect(ConnectError.from(err).rawMessage).toContain("has not announced itself");
    });

    it("a server that closed is reported offline", async () => {
      const serverId = uniqueServerId("gone");
      const server = await createMqttServer({ mqtt: mqttOptions(target), serverId });
      server.service(TestService, interopService);
      const client = createClient(TestService, startTransport(closer, target, { serverId }));
      await client.emptyCall({});
      await server.close();
      const err = await client.emptyCall({}).catch((e: unknown) => e);
      expect(codeOf(err)).toBe(Code.Unavailable);
      expect(ConnectError.from(err).rawMessage).toContain("offline");
    });

    it("waitForServer lets a call wait for a server that starts later", async () => {
      const serverId = uniqueServerId("late");
      const client = createClient(TestService, startTransport(closer, target, { serverId }));
      const call = client.emptyCall(
        {},
        { timeoutMs: 20_000, contextValues: createContextValues().set(waitForServerKey, true) },
      );
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, interopService);
      await expect(call).resolves.toBeDefined();
    });
  });

  describe("connections and topics", () => {
    const closer = new Closer();
    afterEach(() => closer.closeAll());

    it("a service in a dotted proto package and a server id with dots and spaces work", async () => {
      const serverId = "plant 7.line.3";
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, interopService);
      const client = createClient(TestService, startTransport(closer, target, { serverId }));
      const res = await client.unaryCall({ responseSize: 3 });
      expect(res.payload?.body.byteLength).toBe(3);
    });

    it("subscribes for replies once at start, never per call, on a shared MqttClient", async () => {
      const serverId = uniqueServerId("shared");
      const mqttClient = closer.add(
        await connectAsync(mqttOptions(target).url, target.mqttOptions),
        (c) => c.endAsync(),
      );
      const subscribed: string[] = [];
      const original = mqttClient.subscribe.bind(mqttClient);
      (mqttClient as { subscribe: unknown }).subscribe = ((topic: string, ...rest: unknown[]) => {
        subscribed.push(String(topic));
        return (original as (...args: unknown[]) => MqttClient)(topic, ...rest);
      }) as MqttClient["subscribe"];
      // Server and two transports share the one connection.
      const server = await startServer(closer, target, { serverId, mqtt: mqttClient });
      server.service(TestService, interopService);
      const a = createClient(
        TestService,
        startTransport(closer, target, { serverId, mqtt: mqttClient }),
      );
      const b = createClient(
        TestService,
        startTransport(closer, target, { serverId, mqtt: mqttClient }),
      );
      await Promise.all([a.emptyCall({}), b.emptyCall({})]);
      const before = subscribed.length;
      await Promise.all(
        Array.from({ length: 50 }, (_, i) => (i % 2 ? a : b).unaryCall({ responseSize: i })),
      );
      expect(subscribed.length).toBe(before);
      expect(subscribed.filter((t) => t.includes("/c/"))).toHaveLength(1);
    });

    it("concurrent calls share publishes both ways, each still getting its own answer", async () => {
      const serverId = uniqueServerId("coalesce");
      const clientId = `coalesce-${Math.random().toString(36).slice(2, 10)}`;
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, interopService);
      const scheme = new TopicScheme();
      const requestTopic = scheme.requestTopic(
        serverId,
        TestService.typeName,
        "UnaryCall",
        clientId,
      );
      const replyTopic = scheme.replyTopic(clientId, serverId);
      const observer = closer.add(
        await connectAsync(mqttOptions(target).url, target.mqttOptions),
        (c) => c.endAsync(),
      );
      const seen = new Map<string, number>();
      observer.on("message", (t) => seen.set(t, (seen.get(t) ?? 0) + 1));
      await observer.subscribeAsync([requestTopic, replyTopic], { qos: 1 });
      const client = createClient(
        TestService,
        startTransport(closer, target, { serverId, mqtt: mqttOptions(target, clientId) }),
      );
      await client.emptyCall({});
      const calls = 300;
      const sizes = Array.from({ length: calls }, (_, i) => 1 + ((i * 53) % 700));
      const results = await Promise.all(
        sizes.map((responseSize) => client.unaryCall({ responseSize })),
      );
      expect(results.map((r) => r.payload?.body.byteLength)).toEqual(sizes);
      // Every response reached its caller; wait until the observer saw both
      // directions too (NATS may deliver one topic to it later than the other).
      await expect
        .poll(() => (seen.get(requestTopic) ?? 0) > 0 && (seen.get(replyTopic) ?? 0) > 0)
        .toBe(true);
      const requests = seen.get(requestTopic) ?? 0;
      const replies = seen.get(replyTopic) ?? 0;
      // Issued in one turn, the requests need a handful of publishes, not 300;
      // the answers come back in bursts that share publishes the same way.
      expect(requests).toBeGreaterThan(0);
      expect(requests).toBeLessThanOrEqual(calls / 10);
      expect(replies).toBeLessThanOrEqual(calls / 2);
    });

    it("refuses client ids that a broker ACL would match wrongly, naming the option", async () => {
      const serverId = uniqueServerId("clientid");
      for (const clientId of ["alice-c/x", "alice.phone", "alice~phone"]) {
        expect(() =>
          createMqttTransport({ mqtt: mqttOptions(target, clientId), serverId }),
        ).toThrow(/mqtt option: the MQTT client id .* has characters other than/);
        await expect(
          createMqttServer({ mqtt: mqttOptions(target, clientId), serverId }),
        ).rejects.toThrow(/mqtt option: the MQTT client id/);
      }
    });

    it("garbage on a request topic is dropped with a log line and the server keeps serving", async () => {
      const serverId = uniqueServerId("garbage");
      const warnings: string[] = [];
      const server = await startServer(closer, target, {
        serverId,
        logger: { warn: (m) => warnings.push(m) },
      });
      server.service(TestService, interopService);
      const client = createClient(TestService, startTransport(closer, target, { serverId }));
      await client.emptyCall({});
      const raw = closer.add(await connectAsync(target.url, target.mqttOptions), (c) =>
        c.endAsync(),
      );
      const topic = new TopicScheme().requestTopic(
        serverId,
        TestService.typeName,
        "EmptyCall",
        "intruder",
      );
      const garbage = [
        new Uint8Array([0xff, 0xff, 0xff]),
        new Uint8Array(0),
        encodeFrame({ callId: 0, kind: { case: "cancel", value: {} } }),
        new Uint8Array([0x08, 0x09, 0x10, 0x01, 0x32, 0x00]),
      ];
      for (const payload of garbage)
        await raw.publishAsync(topic, Buffer.from(payload), { qos: 1 });
      await raw.publishAsync(
        `mqrpc/s/${new TopicScheme().requestTopic(serverId, "a", "b", "c").split("/")[2]}/x`,
        "junk",
        {
          qos: 1,
        },
      );
      const res = await client.unaryCall({ responseSize: 5 });
      expect(res.payload?.body.byteLength).toBe(5);
      expect(warnings.length).toBeGreaterThanOrEqual(4);
      expect(warnings.join("\n")).toMatch(/malformed frame/);
    });

    /**
     * An MQTT client of its own (`clientId`) that publishes raw EmptyCall
     * frames to `serverId`'s request topic: `open(callId)` is a whole call
     * in one Open; `replies` collects what comes back on its reply topic.
     */
    async function rawEmptyCaller(serverId: string, clientId: string) {
      const raw = closer.add(
        await connectAsync(target.url, { ...target.mqttOptions, clientId }),
        (c) => c.endAsync(),
      );
      const scheme = new TopicScheme();
      const replies: Uint8Array[] = [];
      const replyTopic = scheme.replyTopic(clientId, serverId);
      raw.on("message", (topic, payload) => {
        if (topic === replyTopic) replies.push(payload);
      });
      await raw.subscribeAsync(replyTopic, { qos: 1 });
      const topic = scheme.requestTopic(serverId, TestService.typeName, "EmptyCall", clientId);
      const open = (callId: number) =>
        Buffer.from(
          encodeFrame({
            callId,
            seq: 0,
            kind: { case: "open", value: { message: new Uint8Array(0), halfClose: true } },
          }),
        );
      return {
        replies,
        open,
        publish: (frame: Buffer) => raw.publishAsync(topic, frame, { qos: 1 }),
      };
    }

    it("a request redelivered while its call runs, and after, runs the handler once", async () => {
      const serverId = uniqueServerId("dedup-during");
      const release = deferred();
      const started = deferred();
      let runs = 0;
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, {
        async emptyCall() {
          runs++;
          started.resolve();
          await release.promise;
          return {};
        },
      });
      const raw = await rawEmptyCaller(serverId, `dupd-${Date.now()}`);
      const open = raw.open(7);
      await raw.publish(open);
      await started.promise;
      await raw.publish(open); // during the call
      release.resolve();
      await expect.poll(() => raw.replies.length).toBe(1);
      await raw.publish(open); // after the call
      // A call from another client, after the duplicates, proves they were processed.
      const probe = createClient(TestService, startTransport(closer, target, { serverId }));
      const probeDone = probe.emptyCall({});
      await expect.poll(() => runs).toBe(2);
      await probeDone;
      expect(raw.replies.length).toBe(1);
    });

    it("a request published twice runs the handler once", async () => {
      const serverId = uniqueServerId("dedup");
      let runs = 0;
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, {
        emptyCall() {
          runs++;
          return {};
        },
      });
      const raw = await rawEmptyCaller(serverId, `dup-${serverId.length}-${Date.now()}`);
      const open = raw.open(99);
      await raw.publish(open);
      await raw.publish(open);
      // A later call from the same caller proves both duplicates were processed.
      const marker = raw.open(100);
      await raw.publish(marker);
      await expect.poll(() => raw.replies.length).toBe(2);
      expect(runs).toBe(2);
      await raw.publish(open);
      await raw.publish(marker);
      const probe = createClient(TestService, startTransport(closer, target, { serverId }));
      await probe.emptyCall({});
      expect(runs).toBe(3);
      expect(raw.replies.length).toBe(2);
    });
  });
});

describe("configuration errors name the option", () => {
  it("rejects an empty server id and a bad topic prefix", () => {
    expect(() => createMqttTransport({ mqtt: "mqtt://127.0.0.1:1", serverId: "" })).toThrow(
      /serverId/,
    );
    expect(() =>
      createMqttTransport({ mqtt: "mqtt://127.0.0.1:1", serverId: "x", topicPrefix: "a/#" }),
    ).toThrow(/topicPrefix/);
    expect(() =>
      createMqttTransport({ mqtt: "mqtt://127.0.0.1:1", serverId: "x", maxMessageBytes: -1 }),
    ).toThrow(/maxMessageBytes/);
    expect(() => createMqttTransport({ mqtt: "", serverId: "x" })).toThrow(/mqtt option/);
  });
});
