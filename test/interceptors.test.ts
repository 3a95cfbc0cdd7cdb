/**
 * Connect interceptors run on both sides, as with any Connect transport and
 * server: a client interceptor can add headers and see the response, a
 * server interceptor can read request headers and set trailers, for unary
 * and streaming calls.
 */
import { createClient, type Interceptor } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { forBrokersWhere } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "./support/interop-service.js";
import { Closer, startServer, startTransport, uniqueServerId } from "./support/rpc-fixture.js";

forBrokersWhere(
  (t) => t.kind === "aedes" || t.name === "mosquitto-5",
  (target) => {
    describe("interceptors", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      it("run on the client and the server for unary and streaming calls", async () => {
        const seen: string[] = [];
        const clientSide: Interceptor = (next) => async (req) => {
          req.header.set("x-client-interceptor", req.method.name);
          const res = await next(req);
          seen.push(`client ${req.method.name} ${res.stream ? "stream" : "unary"}`);
          return res;
        };
        const serverSide: Interceptor = (next) => async (req) => {
          const res = await next(req);
          res.trailer.set("x-echo", req.header.get("x-client-interceptor") ?? "missing");
          seen.push(`server ${req.method.name}`);
          return res;
        };
        const serverId = uniqueServerId("interceptors");
        const server = await startServer(closer, target, { serverId, interceptors: [serverSide] });
        server.service(TestService, interopService);
        const client = createClient(
          TestService,
          startTransport(closer, target, { serverId, interceptors: [clientSide] }),
        );
        let unaryTrailer: Headers | undefined;
        await client.unaryCall({ responseSize: 1 }, { onTrailer: (t) => (unaryTrailer = t) });
        expect(unaryTrailer?.get("x-echo")).toBe("UnaryCall");
        let streamTrailer: Headers | undefined;
        const sizes: number[] = [];
        for await (const res of client.streamingOutputCall(
          { responseParameters: [{ size: 2 }, { size: 3 }] },
          { onTrailer: (t) => (streamTrailer = t) },
        )) {
          sizes.push(res.payload?.body.byteLength ?? -1);
        }
        expect(sizes).toEqual([2, 3]);
        expect(streamTrailer?.get("x-echo")).toBe("StreamingOutputCall");
        // Both sides ran once per call (their relative order on a stream is not fixed).
        expect([...seen].sort()).toEqual([
          "client StreamingOutputCall stream",
          "client UnaryCall unary",
          "server StreamingOutputCall",
          "server UnaryCall",
        ]);
      });
    });
  },
);
