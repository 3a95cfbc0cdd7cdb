/**
 * Unmodified gRPC code over the bridge: a @grpc/grpc-js server takes the
 * listener's sockets through its connection injector, and a Connect-node
 * gRPC client dials through `connectMqtt` (its HTTP/2 session's
 * `createConnection`); the gRPC interop cases pass on every broker.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, it } from "vitest";
import { forBrokersWhere } from "../../../test/brokers/targets.js";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { interopCases } from "../../../test/support/interop-cases.js";
import { Closer } from "../../../test/support/rpc-fixture.js";
import { connectMqtt } from "../src/index.js";
import { callerMqtt, startListener } from "./support/bridge-fixture.js";
import { grpcJsTestServer } from "./support/grpc-js-test-service.js";

forBrokersWhere(
  (t) => t.kind === "aedes" || t.name === "mosquitto-5" || t.kind === "nats",
  (target) => {
    describe("grpc-js server and Connect client over the bridge", () => {
      const closer = new Closer();
      let client: ReturnType<typeof createClient<typeof TestService>>;

      beforeAll(async () => {
        const listener = await startListener(closer, target, { port: 50051 });
        const grpc = closer.add(grpcJsTestServer(), (s) => s.close());
        listener.on("connection", (socket) => grpc.injector.injectConnection(socket));
        const mqtt = callerMqtt(target);
        const sessions = closer.add(
          new Http2SessionManager(
            "http://device:50051",
            {},
            {
              createConnection: () =>
                connectMqtt({ mqtt, serverId: listener.serverId, port: 50051 }),
            },
          ),
          (m) => m.abort(),
        );
        client = createClient(
          TestService,
          createGrpcTransport({ baseUrl: "http://device:50051", sessionManager: sessions }),
        );
      });
      afterAll(() => closer.closeAll());

      for (const [name, run] of Object.entries(interopCases)) {
        it(name, () => run(client));
      }
    });
  },
);
