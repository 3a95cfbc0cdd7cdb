/**
 * Flow control and lifecycle of the ingress: a slow gRPC client reading a
 * long server stream holds the device back (the ingress buffers a bounded
 * number of messages, not the stream), a client whose connection drops
 * cancels its calls on the device, closing the ingress ends calls in flight
 * with UNAVAILABLE, and the number of devices with an open transport is
 * bounded.
 */
import * as http2 from "node:http2";
import * as net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forBrokersWhere } from "../../../test/brokers/targets.js";
import {
  file_mqrpc_interop_v1_test,
  StreamingOutputCallRequestSchema,
  TestService,
} from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import {
  Closer,
  mqttOptions,
  startServer,
  uniqueServerId,
} from "../../../test/support/rpc-fixture.js";
import { createGrpcIngress, type GrpcIngress } from "../src/index.js";
import {
  grpcAddress,
  InteropGrpcClient,
  readStatus,
  readStream,
} from "./support/grpc-js-interop.js";
import { type NativeDevice, startNativeDevice } from "./support/native-device.js";

/** Messages of the long stream, and their size. */
const STREAM_MESSAGES = 10_000;
const MESSAGE_BYTES = 1024;
/**
 * Most messages the device may have produced beyond what the client read:
 * the device's MQTT window (64), the ingress's HTTP/2 stream and connection
 * windows and write buffer (~64 + 64 + 16 KiB), grpc-js's receive buffers,
 * with room to spare (about 160 were seen). Without end-to-end flow
 * control (the ingress writing without waiting for 'drain') the device runs
 * through the stream while the client stalls (over 1200 seen, and counting).
 */
const MAX_AHEAD = 500;

forBrokersWhere(
  (t) => t.name === "aedes" || t.name === "mosquitto-5",
  (target) => {
    describe("a slow gRPC client reading a long server stream", () => {
      const closer = new Closer();
      let serverId: string;
      let ingress: GrpcIngress;
      let produced = 0;

      beforeAll(async () => {
        serverId = uniqueServerId("ingress-flow");
        const server = await startServer(closer, target, { serverId });
        server.service(TestService, {
          async *streamingOutputCall(req) {
            const body = new Uint8Array(MESSAGE_BYTES);
            for (let i = 0; i < (req.responseParameters[0]?.size ?? 0); i++) {
              produced++;
              yield { payload: { body } };
            }
          },
        });
        ingress = closer.add(await createGrpcIngress({ mqtt: mqttOptions(target) }), (i) =>
          i.close(),
        );
      });
      afterAll(() => closer.closeAll());

      it(`holds the device back: at most ${MAX_AHEAD} messages ahead of the reader`, async () => {
        const client = closer.add(new InteropGrpcClient(grpcAddress(ingress.url), serverId), (c) =>
          c.close(),
        );
        const call = client.streamingOutputCall({
          responseParameters: [{ size: STREAM_MESSAGES }],
        });
        const status = readStatus(call);
        let consumed = 0;
        let maxAhead = 0;
        const ahead = () => {
          maxAhead = Math.max(maxAhead, produced - consumed);
        };
        let first!: () => void;
        const firstArrived = new Promise<void>((resolve) => {
          first = resolve;
        });
        call.on("data", () => {
          consumed++;
          ahead();
          if (consumed === 1) {
            call.pause();
            first();
          } else if (consumed % 500 === 0) {
            // Reads slowly: a pause every 500 messages.
            call.pause();
            setTimeout(() => call.resume(), 20);
          }
        });
        const ended = new Promise((resolve) => call.on("end", resolve));
        await firstArrived;
        // The client reads nothing: the device must stall. Wait until it
        // produced nothing for 300 ms (or ran past the bound, a failure).
        let last = -1;
        while (produced !== last && produced - consumed <= MAX_AHEAD) {
          last = produced;
          await new Promise((resolve) => setTimeout(resolve, 300));
        }
        ahead();
        expect(produced - consumed).toBeLessThanOrEqual(MAX_AHEAD);
        call.resume();
        await ended;
        expect((await status).code).toBe(grpc.status.OK);
        expect(consumed).toBe(STREAM_MESSAGES);
        expect(produced).toBe(STREAM_MESSAGES);
        expect(maxAhead).toBeLessThanOrEqual(MAX_AHEAD);
      });
    });

    describe("cancellation, closing and limits", () => {
      const closer = new Closer();
      let device: NativeDevice;
      let other: NativeDevice;

      beforeAll(async () => {
        device = await startNativeDevice(closer, target);
        other = await startNativeDevice(closer, target);
      });
      afterAll(() => closer.closeAll());

      it("a client whose connection drops mid-stream cancels its call on the device", async () => {
        const ingress = closer.add(await createGrpcIngress({ mqtt: mqttOptions(target) }), (i) =>
          i.close(),
        );
        const handler = device.watchHandler("StreamingOutputCall");
        const url = new URL(ingress.url);
        const socket = net.connect(Number(url.port), url.hostname);
        const session = http2.connect(ingress.url, { createConnection: () => socket });
        const stream = session.request({
          ":method": "POST",
          ":path": "/mqrpc.interop.v1.TestService/StreamingOutputCall",
          "content-type": "application/grpc",
          te: "trailers",
          "mqrpc-server-id": device.serverId,
        });
        stream.end(
          encodeEnvelope(
            0,
            toBinary(
              StreamingOutputCallRequestSchema,
              create(StreamingOutputCallRequestSchema, {
                responseParameters: [{ size: 1 }, { size: 1, intervalUs: 60_000_000 }],
              }),
            ),
          ),
        );
        await new Promise((resolve) => stream.once("data", resolve));
        await handler.started;
        // No RST_STREAM, no GOAWAY: the TCP connection just goes.
        socket.destroy();
        expect(await handler.ended).toBe("cancelled");
      });

      it("closing the ingress ends calls in flight with UNAVAILABLE and cancels them on the device", async () => {
        const ingress = await createGrpcIngress({ mqtt: mqttOptions(target) });
        const client = closer.add(
          new InteropGrpcClient(grpcAddress(ingress.url), device.serverId),
          (c) => c.close(),
        );
        const handler = device.watchHandler("StreamingOutputCall");
        const call = client.streamingOutputCall({
          responseParameters: [{ size: 1 }, { size: 1, intervalUs: 60_000_000 }],
        });
        const outcome = readStream(call);
        await new Promise((resolve) => call.once("data", resolve));
        await handler.started;
        await ingress.close();
        const { messages, status } = await outcome;
        expect(messages).toHaveLength(1);
        expect(status.code).toBe(grpc.status.UNAVAILABLE);
        expect(await handler.ended).toBe("cancelled");
      });

      it("1,500 concurrent calls through one ingress all complete: the ingress holds those the device would refuse", async () => {
        // The ingress is one MQTT caller to the device: beyond the device's
        // 900 slots and 250 places to wait for one caller (what it announces
        // as max_calls_per_caller), calls wait in the ingress.
        const serverId = uniqueServerId("ingress-many");
        const server = await startServer(closer, target, { serverId });
        let started = 0;
        let release: () => void = () => {};
        const released = new Promise<void>((resolve) => {
          release = resolve;
        });
        server.service(TestService, {
          async unaryCall() {
            started++;
            await released;
            return {};
          },
        });
        await server.announced();
        const ingress = closer.add(await createGrpcIngress({ mqtt: mqttOptions(target) }), (i) =>
          i.close(),
        );
        const client = closer.add(new InteropGrpcClient(grpcAddress(ingress.url), serverId), (c) =>
          c.close(),
        );
        const calls = Array.from({ length: 1500 }, () =>
          client.unaryCall({}, { timeoutMs: 60_000 }),
        );
        await expect.poll(() => started, { timeout: 30_000 }).toBe(900);
        release();
        const outcomes = await Promise.all(calls);
        const failed = outcomes.flatMap((o) => (o.error === undefined ? [] : [o.error.code]));
        expect(failed).toEqual([]);
        expect(started).toBe(1500);
      });

      it("a gRPC call without a request message (also the first to its device) ends INTERNAL, one whose message never comes ends at its deadline, and both give their place back", async () => {
        // The device takes one call from the ingress at a time: a call the
        // ingress abandoned without giving its place back would block it.
        // The first call's empty body ended while the call waited for its
        // device, and hung until the ingress noticed that.
        const serverId = uniqueServerId("ingress-empty");
        const server = await startServer(closer, target, {
          serverId,
          maxCallsPerClient: 1,
          maxQueuedCalls: 0,
        });
        server.service(TestService, { unaryCall: () => ({}) });
        await server.announced();
        const ingress = closer.add(
          await createGrpcIngress({
            mqtt: mqttOptions(target),
            descriptorSet: create(FileDescriptorSetSchema, {
              file: [file_mqrpc_interop_v1_test.proto],
            }),
          }),
          (i) => i.close(),
        );
        const session = closer.add(http2.connect(ingress.url), (s) => s.close());
        const call = (body: Uint8Array | undefined, timeout = "20S") =>
          new Promise<string | undefined>((resolve) => {
            const stream = session.request({
              ":method": "POST",
              ":path": "/mqrpc.interop.v1.TestService/UnaryCall",
              "content-type": "application/grpc",
              te: "trailers",
              "grpc-timeout": timeout,
              "mqrpc-server-id": serverId,
            });
            let status: string | undefined;
            stream.on("response", (h) => {
              status ??= h["grpc-status"] as string | undefined;
            });
            stream.on("trailers", (h) => {
              status = h["grpc-status"] as string | undefined;
            });
            stream.on("data", () => {});
            stream.on("close", () => resolve(status));
            // No body at all: the request stream stays open.
            if (body !== undefined) stream.end(body);
          });
        for (let i = 0; i < 3; i++) {
          expect(await call(new Uint8Array(0))).toBe(String(grpc.status.INTERNAL));
          expect(await call(encodeEnvelope(0, new Uint8Array(0)))).toBe(String(grpc.status.OK));
        }
        // A request message that never comes: the call ends at its deadline.
        expect(await call(undefined, "300m")).toBe(String(grpc.status.DEADLINE_EXCEEDED));
        expect(await call(encodeEnvelope(0, new Uint8Array(0)))).toBe(String(grpc.status.OK));
      });

      it("maxDevices: a call to one device too many is RESOURCE_EXHAUSTED while the others are busy", async () => {
        const ingress = closer.add(
          await createGrpcIngress({ mqtt: mqttOptions(target), maxDevices: 1 }),
          (i) => i.close(),
        );
        const first = closer.add(
          new InteropGrpcClient(grpcAddress(ingress.url), device.serverId),
          (c) => c.close(),
        );
        const second = closer.add(
          new InteropGrpcClient(grpcAddress(ingress.url), other.serverId),
          (c) => c.close(),
        );
        const handler = device.watchHandler("StreamingOutputCall");
        const busy = first.streamingOutputCall({
          responseParameters: [{ size: 1, intervalUs: 60_000_000 }],
        });
        const busyStatus = readStatus(busy);
        await handler.started;
        const refused = await second.emptyCall();
        expect(refused.error?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
        expect(refused.error?.details).toContain("maxDevices");
        busy.cancel();
        expect((await busyStatus).code).toBe(grpc.status.CANCELLED);
        await handler.ended;
        // The first device has no call left: it makes room for the second.
        const served = await second.emptyCall();
        expect(served.error).toBeUndefined();
      });
    });
  },
);
