/**
 * A standard gRPC client (@grpc/grpc-js, generic client, no mqrpc code)
 * calls a native mqrpc server through the ingress: the gRPC interop cases,
 * deadlines, metadata filtering, status details, request compression, the
 * routing header and offline devices, on every broker target.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forEachBroker } from "../../../test/brokers/targets.js";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { Closer, mqttOptions } from "../../../test/support/rpc-fixture.js";
import { createGrpcIngress, type GrpcIngress } from "../src/index.js";
import { grpcAddress, InteropGrpcClient, interopCases } from "./support/grpc-js-interop.js";
import {
  DETAILS,
  FAIL_WITH_DETAILS,
  type NativeDevice,
  startNativeDevice,
} from "./support/native-device.js";
import { decodeRpcStatus } from "./support/status-details.js";

forEachBroker((target) => {
  describe("grpc-js → ingress → MQTT → native mqrpc server", () => {
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

    interopCases(() => ({ client, watchHandler: (m) => device.watchHandler(m) }));

    it("grpc-timeout becomes the handler's deadline; metadata arrives without reserved headers", async () => {
      const { error } = await client.emptyCall({
        timeoutMs: 5000,
        metadata: { "x-app": "one", "x-app-bin": Buffer.from([0, 1, 2, 255]) },
      });
      expect(error).toBeUndefined();
      const seen = device.lastEmptyCall();
      expect(seen?.timeoutMs).toBeGreaterThan(0);
      expect(seen?.timeoutMs).toBeLessThanOrEqual(5000);
      const header = seen?.requestHeader ?? new Headers();
      expect(header.get("x-app")).toBe("one");
      expect([...Buffer.from(header.get("x-app-bin") ?? "", "base64")]).toEqual([0, 1, 2, 255]);
      for (const reserved of ["mqrpc-server-id", "grpc-timeout", "te", "content-type"]) {
        expect(header.has(reserved), reserved).toBe(false);
      }
    });

    it("status details reach grpc-js as grpc-status-details-bin and Connect as { type, value }", async () => {
      const responseStatus = { code: Code.FailedPrecondition, message: FAIL_WITH_DETAILS };
      const { error } = await client.unaryCall({ responseStatus });
      expect(error?.code).toBe(grpc.status.FAILED_PRECONDITION);
      const [bin] = error?.metadata.get("grpc-status-details-bin") ?? [];
      const status = decodeRpcStatus(bin as Buffer);
      expect(status.code).toBe(Code.FailedPrecondition);
      expect(status.message).toBe(FAIL_WITH_DETAILS);
      expect(status.details.map((d) => ({ type: d.type, value: [...d.value] }))).toEqual([
        { type: DETAILS.type, value: [...DETAILS.value] },
      ]);

      const connect = createClient(TestService, createGrpcTransport({ baseUrl: ingress.url }));
      const e = await connect
        .unaryCall({ responseStatus }, { headers: { "mqrpc-server-id": device.serverId } })
        .catch((err: unknown) => ConnectError.from(err));
      expect(e).toBeInstanceOf(ConnectError);
      expect((e as ConnectError).code).toBe(Code.FailedPrecondition);
      const details = (e as ConnectError).details.map((d) =>
        "type" in d ? { type: d.type, value: [...d.value] } : d,
      );
      expect(details).toEqual([{ type: DETAILS.type, value: [...DETAILS.value] }]);
    });

    it("gzip-compressed requests are decompressed for the device; deflate is UNIMPLEMENTED", async () => {
      const gzip = new InteropGrpcClient(grpcAddress(ingress.url), device.serverId, {
        "grpc.default_compression_algorithm": grpc.compressionAlgorithms.gzip,
      });
      const deflate = new InteropGrpcClient(grpcAddress(ingress.url), device.serverId, {
        "grpc.default_compression_algorithm": grpc.compressionAlgorithms.deflate,
      });
      try {
        const { message, error } = await gzip.unaryCall({
          responseSize: 3,
          payload: { body: new Uint8Array(100_000) },
        });
        expect(error).toBeUndefined();
        expect(message?.payload?.body.byteLength).toBe(3);
        const refused = await deflate.unaryCall({
          responseSize: 3,
          payload: { body: new Uint8Array(100) },
        });
        expect(refused.error?.code).toBe(grpc.status.UNIMPLEMENTED);
        expect(refused.error?.details).toContain("deflate");
      } finally {
        gzip.close();
        deflate.close();
      }
    });

    it("without mqrpc-server-id: INVALID_ARGUMENT naming the header", async () => {
      const { error } = await client.emptyCall({ noServerId: true });
      expect(error?.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(error?.details).toContain("mqrpc-server-id");
    });

    it("a device that is not online: UNAVAILABLE, naming it", async () => {
      const offline = new InteropGrpcClient(grpcAddress(ingress.url), `${device.serverId}-offline`);
      try {
        const { error } = await offline.emptyCall();
        expect(error?.code).toBe(grpc.status.UNAVAILABLE);
        expect(error?.details).toContain(`${device.serverId}-offline`);
      } finally {
        offline.close();
      }
    });
  });
});
