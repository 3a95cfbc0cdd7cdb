/**
 * Programs that only take a host and port: a device exposes its ordinary
 * TCP grpc-js server with `exposePort`, and an unmodified grpc-js client
 * and an unmodified Python grpcio client (Debian's python3-grpcio, run by
 * /usr/bin/python3) reach it through `forwardPort` on the caller's side.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerTargets } from "../../../test/brokers/targets.js";
import {
  type SimpleResponse,
  type StreamingOutputCallResponse,
  TestService,
} from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { Closer, mqttOptions, uniqueServerId } from "../../../test/support/rpc-fixture.js";
import { exposePort, forwardPort, type PortForward } from "../src/index.js";
import { callerMqtt } from "./support/bridge-fixture.js";
import { grpcDefinition, grpcJsTestService } from "./support/grpc-js-test-service.js";

/** The generic grpc-js client's methods this test calls. */
interface TestClient extends grpc.Client {
  unaryCall(
    request: object,
    callback: (error: grpc.ServiceError | null, response: SimpleResponse) => void,
  ): grpc.ClientUnaryCall;
  streamingOutputCall(request: object): grpc.ClientReadableStream<StreamingOutputCallResponse>;
}

const PYTHON_CLIENT = fileURLToPath(new URL("./support/grpc_forward_client.py", import.meta.url));

const targets = brokerTargets();
const target =
  targets.find((t) => t.name === "mosquitto-5") ?? targets.find((t) => t.kind === "aedes");

describe.runIf(target !== undefined)(`gRPC clients through forwardPort, on ${target?.name}`, () => {
  const closer = new Closer();
  let forward: PortForward;

  beforeAll(async () => {
    if (target === undefined) return;
    // The device: a grpc-js server on a loopback TCP port, exposed as virtual port 50051.
    const server = new grpc.Server();
    server.addService(grpcDefinition(TestService), grpcJsTestService);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
        e ? reject(e) : resolve(p),
      ),
    );
    closer.add(server, (s) => s.forceShutdown());
    const serverId = uniqueServerId("grpc-device");
    closer.add(
      await exposePort({ mqtt: mqttOptions(target), serverId, port: 50051, target: { port } }),
      (e) => e.close(),
    );
    // The caller's side: a local port that leads there.
    forward = closer.add(
      await forwardPort({ mqtt: callerMqtt(target), serverId, port: 50051 }),
      (f) => f.close(),
    );
  });
  afterAll(() => closer.closeAll());

  it("serves an unmodified grpc-js client", async () => {
    const Client = grpc.makeGenericClientConstructor(grpcDefinition(TestService), "TestService");
    const client = closer.add(
      new Client(`127.0.0.1:${forward.address.port}`, grpc.credentials.createInsecure()),
      (c) => c.close(),
    ) as unknown as TestClient;
    const unary = await new Promise<SimpleResponse>((resolve, reject) =>
      client.unaryCall(
        { responseSize: 314159, payload: { body: new Uint8Array(271828) } },
        (e, r) => (e ? reject(e) : resolve(r)),
      ),
    );
    expect(unary.payload?.body.byteLength).toBe(314159);

    const sizes: number[] = [];
    const stream = client.streamingOutputCall({
      responseParameters: [{ size: 31415 }, { size: 9 }, { size: 2653 }, { size: 58979 }],
    });
    for await (const r of stream) {
      sizes.push((r as StreamingOutputCallResponse).payload?.body.byteLength ?? -1);
    }
    expect(sizes).toEqual([31415, 9, 2653, 58979]);

    const failed = await new Promise<grpc.ServiceError>((resolve) =>
      client.unaryCall({ responseStatus: { code: 5, message: "gone" } }, (e) =>
        resolve(e as grpc.ServiceError),
      ),
    );
    expect([failed.code, failed.details]).toEqual([grpc.status.NOT_FOUND, "gone"]);
  });

  it("serves an unmodified Python grpcio client", async () => {
    const output = await new Promise<string>((resolve, reject) =>
      execFile(
        "/usr/bin/python3",
        [PYTHON_CLIENT, `127.0.0.1:${forward.address.port}`],
        { timeout: 60_000 },
        (error, stdout, stderr) =>
          error ? reject(new Error(`${error.message}\n${stdout}\n${stderr}`)) : resolve(stdout),
      ),
    );
    expect(JSON.parse(output)).toEqual({
      empty: true,
      unary: true,
      echoed: "from-python",
      stream: true,
      status: [5, "gone!"],
    });
  }, 60_000);
});
