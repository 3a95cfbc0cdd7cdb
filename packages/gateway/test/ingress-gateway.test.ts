/**
 * End to end with unmodified tools on both ends: a grpc-js client and
 * `buf curl` call a Python gRPC server (Debian's python3-grpcio, no mqrpc
 * code) through ingress → MQTT → gateway, on every broker target: the
 * interop cases, reflection answered by the gateway and read through the
 * ingress, and a Connect JSON call transcoded by the ingress.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forEachBroker } from "../../../test/brokers/targets.js";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { Closer, mqttOptions, uniqueServerId } from "../../../test/support/rpc-fixture.js";
import { createGrpcGateway, createGrpcIngress, type GrpcIngress } from "../src/index.js";
import {
  grpcAddress,
  type HandlerEnd,
  type HandlerWatch,
  InteropGrpcClient,
  interopCases,
} from "./support/grpc-js-interop.js";
import { pythonInteropForFile } from "./support/upstream-process.js";

const run = promisify(execFile);
const BUF = new URL("../../../node_modules/.bin/buf", import.meta.url).pathname;

const interop = pythonInteropForFile();

/** The Python server's handler of the next call of `method`, from its event lines. */
function watchPython(method: string): HandlerWatch {
  const from = interop.python.mark();
  const started = interop.python
    .until((e) => e.event === "started" && e.method === method, 15_000, from)
    .then(() => undefined);
  const ended = interop.python
    .until((e) => e.event === "done" && e.method === method, 15_000, from)
    .then((e): HandlerEnd => ("cancelled" in e && e.cancelled === true ? "cancelled" : "finished"));
  return { started, ended };
}

forEachBroker((target) => {
  describe("grpc-js and buf curl → ingress → MQTT → gateway → Python gRPC server", () => {
    const closer = new Closer();
    let serverId: string;
    let ingress: GrpcIngress;
    let client: InteropGrpcClient;

    beforeAll(async () => {
      serverId = uniqueServerId("ingress-gw");
      closer.add(
        await createGrpcGateway({
          mqtt: mqttOptions(target),
          serverId,
          upstreams: [interop.upstream],
        }),
        (g) => g.close(),
      );
      ingress = closer.add(await createGrpcIngress({ mqtt: mqttOptions(target) }), (i) =>
        i.close(),
      );
      client = closer.add(new InteropGrpcClient(grpcAddress(ingress.url), serverId), (c) =>
        c.close(),
      );
    });
    afterAll(() => closer.closeAll());

    interopCases(() => ({ client, watchHandler: watchPython }));

    it("buf curl lists the services through reflection and calls the Python server", async () => {
      const common = [
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "-H",
        `mqrpc-server-id: ${serverId}`,
        "--reflect-header",
        "*",
      ];
      const list = await run(BUF, [...common, "--list-services", ingress.url]);
      expect(list.stdout.split("\n")).toContain("mqrpc.interop.v1.TestService");
      const from = interop.python.mark();
      const call = await run(BUF, [
        ...common,
        "-d",
        '{"responseSize": 3}',
        `${ingress.url}/mqrpc.interop.v1.TestService/UnaryCall`,
      ]);
      expect(JSON.parse(call.stdout)).toEqual({ payload: { body: "AAAA" } });
      await interop.python.until(
        (e) => e.event === "done" && e.method === "UnaryCall",
        15_000,
        from,
      );
    });

    it("buf curl with its default protocol (Connect) lists, describes and calls through reflection", async () => {
      const common = [
        "curl",
        "--http2-prior-knowledge",
        "-H",
        `mqrpc-server-id: ${serverId}`,
        "--reflect-header",
        `mqrpc-server-id: ${serverId}`,
      ];
      const list = await run(BUF, [...common, "--list-methods", ingress.url]);
      expect(list.stdout.split("\n")).toContain("mqrpc.interop.v1.TestService/UnaryCall");
      const call = await run(BUF, [
        ...common,
        "-d",
        '{"responseSize": 2}',
        `${ingress.url}/mqrpc.interop.v1.TestService/UnaryCall`,
      ]);
      expect(JSON.parse(call.stdout)).toEqual({ payload: { body: "AAA=" } });
    });

    it("a Connect JSON call, transcoded by the ingress with the schema the gateway reflects", async () => {
      const connect = createClient(
        TestService,
        createConnectTransport({ baseUrl: ingress.url, httpVersion: "2", useBinaryFormat: false }),
      );
      const res = await connect.unaryCall(
        { responseSize: 5 },
        { headers: { "mqrpc-server-id": serverId } },
      );
      expect(res.payload?.body.byteLength).toBe(5);
    });
  });
});
