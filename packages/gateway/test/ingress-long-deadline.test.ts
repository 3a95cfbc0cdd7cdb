/**
 * gRPC deadlines longer than a timer or the Open frame's uint32
 * `timeout_ms` holds, through the ingress to a native mqrpc server, on
 * every broker target: grpc-js with a 1-year deadline (it sends
 * `grpc-timeout` and keeps no timer of its own past 2³¹−1 ms) and raw
 * HTTP/2 with gRPC's largest `grpc-timeout` values complete OK; the handler
 * then has no deadline (docs/PROTOCOL.md section 12); a short
 * `grpc-timeout` still ends the call with DEADLINE_EXCEEDED.
 */
import * as http2 from "node:http2";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forEachBroker } from "../../../test/brokers/targets.js";
import { Closer, mqttOptions } from "../../../test/support/rpc-fixture.js";
import { createGrpcIngress, type GrpcIngress } from "../src/index.js";
import {
  grpcAddress,
  InteropGrpcClient,
  readStream,
  TEST_SERVICE,
} from "./support/grpc-js-interop.js";
import { type NativeDevice, startNativeDevice } from "./support/native-device.js";

const YEAR = 365 * 86_400_000;

/**
 * One raw gRPC EmptyCall with `grpc-timeout: timeout`; its grpc-status.
 * `json`: the JSON codec (`application/grpc+json`), which Connect's router serves.
 */
function rawEmptyCall(
  base: string,
  serverId: string,
  timeout: string,
  json = false,
): Promise<string> {
  const session = http2.connect(base);
  session.on("error", () => {});
  return new Promise<string>((resolve, reject) => {
    let status: string | undefined;
    const stream = session.request({
      ":method": "POST",
      ":path": `/${TEST_SERVICE}/EmptyCall`,
      "content-type": json ? "application/grpc+json" : "application/grpc",
      te: "trailers",
      "grpc-timeout": timeout,
      "mqrpc-server-id": serverId,
    });
    const take = (h: http2.IncomingHttpHeaders) => {
      const s = h["grpc-status"];
      if (typeof s === "string") status = s;
    };
    stream.on("response", take);
    stream.on("trailers", take);
    stream.on("data", () => {});
    stream.on("error", reject);
    stream.on("close", () => {
      session.close();
      if (status === undefined) reject(new Error(`no grpc-status for grpc-timeout ${timeout}`));
      else resolve(status);
    });
    // An empty Empty request: one uncompressed gRPC frame of length 0 (JSON: "{}").
    stream.end(json ? Buffer.from([0, 0, 0, 0, 2, 0x7b, 0x7d]) : Buffer.from([0, 0, 0, 0, 0]));
  });
}

/** One Connect unary EmptyCall (JSON) with `connect-timeout-ms: timeout`; its HTTP status and body. */
function connectEmptyCall(
  base: string,
  serverId: string,
  timeout: string,
): Promise<{ status: number; body: string }> {
  const session = http2.connect(base);
  session.on("error", () => {});
  return new Promise((resolve, reject) => {
    let status = 0;
    let body = "";
    const stream = session.request({
      ":method": "POST",
      ":path": `/${TEST_SERVICE}/EmptyCall`,
      "content-type": "application/json",
      "connect-protocol-version": "1",
      "connect-timeout-ms": timeout,
      "mqrpc-server-id": serverId,
    });
    stream.on("response", (h) => {
      status = Number(h[":status"]);
    });
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      body += chunk;
    });
    stream.on("error", reject);
    stream.on("close", () => {
      session.close();
      resolve({ status, body });
    });
    stream.end("{}");
  });
}

forEachBroker((target) => {
  describe("ingress: deadlines longer than a timer or the Open field holds", () => {
    const closer = new Closer();
    let device: NativeDevice;
    let ingress: GrpcIngress;
    let client: InteropGrpcClient;

    beforeAll(async () => {
      device = await startNativeDevice(closer, target);
      ingress = closer.add(await createGrpcIngress({ mqtt: mqttOptions(target) }), (i) =>
        i.close(),
      );
      client = closer.add(new InteropGrpcClient(grpcAddress(ingress.url), device.serverId), (c) =>
        c.close(),
      );
    });
    afterAll(() => closer.closeAll());

    it("grpc-js, 1-year deadline: unary and server-streaming calls complete OK", async () => {
      const { error } = await client.emptyCall({ timeoutMs: YEAR });
      expect(error).toBeUndefined();
      expect(device.lastEmptyCall()?.timeoutMs).toBeUndefined();

      const unary = await client.unaryCall({ responseSize: 7 }, { timeoutMs: YEAR });
      expect(unary.error).toBeUndefined();
      expect(unary.message?.payload?.body.byteLength).toBe(7);

      const stream = await readStream(
        client.streamingOutputCall(
          { responseParameters: [{ size: 1 }, { size: 2, intervalUs: 150_000 }] },
          { timeoutMs: YEAR },
        ),
      );
      expect(stream.status.code).toBe(grpc.status.OK);
      expect(stream.messages.map((m) => m.payload?.body.byteLength)).toEqual([1, 2]);
    });

    for (const timeout of ["99999999H", "30000000S", "2147484S", "4294968S"]) {
      it(`raw gRPC, grpc-timeout ${timeout}: OK, the handler has no deadline`, async () => {
        expect(await rawEmptyCall(ingress.url, device.serverId, timeout)).toBe("0");
        expect(device.lastEmptyCall()?.timeoutMs).toBeUndefined();
      });
    }

    it("raw gRPC, grpc-timeout 2147483m (fits the field): OK, the handler has it", async () => {
      expect(await rawEmptyCall(ingress.url, device.serverId, "2147483m")).toBe("0");
      const seen = device.lastEmptyCall()?.timeoutMs;
      expect(seen).toBeGreaterThan(2_147_000);
      expect(seen).toBeLessThanOrEqual(2_147_483);
    });

    it("JSON codec and Connect, deadlines beyond a timer: OK, the handler has no deadline", async () => {
      for (const timeout of ["99999999H", "2147484S"]) {
        expect(await rawEmptyCall(ingress.url, device.serverId, timeout, true)).toBe("0");
        expect(device.lastEmptyCall()?.timeoutMs).toBeUndefined();
      }
      for (const timeout of ["2147483648", "9999999999"]) {
        expect(await connectEmptyCall(ingress.url, device.serverId, timeout)).toEqual({
          status: 200,
          body: "{}",
        });
        expect(device.lastEmptyCall()?.timeoutMs).toBeUndefined();
      }
      // One that a timer holds still reaches the handler.
      expect(await connectEmptyCall(ingress.url, device.serverId, "2147483000")).toEqual({
        status: 200,
        body: "{}",
      });
      expect(device.lastEmptyCall()?.timeoutMs).toBeGreaterThan(2_147_000_000);
    });

    it("a short deadline still ends a stream with DEADLINE_EXCEEDED", async () => {
      const stream = await readStream(
        client.streamingOutputCall(
          { responseParameters: [{ size: 1 }, { size: 1, intervalUs: 10_000_000 }] },
          { timeoutMs: 300 },
        ),
      );
      expect(stream.status.code).toBe(grpc.status.DEADLINE_EXCEEDED);
      expect(stream.messages).toHaveLength(1);
    });
  });
});
