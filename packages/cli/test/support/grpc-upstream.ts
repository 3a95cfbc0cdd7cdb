/**
 * A plain gRPC server of TestService (Connect for Node, HTTP/2 cleartext)
 * on a free loopback port: what the gateway puts behind a server id, and
 * what a forwarded port leads to.
 */
import { createServer, type Http2Server } from "node:http2";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { TestService } from "../../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "../../../../test/support/interop-service.js";
import type { Closer } from "../../../../test/support/rpc-fixture.js";

/** Starts the server (closed by `closer`); resolves to its port. */
export async function startGrpcUpstream(closer: Closer): Promise<number> {
  const server: Http2Server = createServer(
    connectNodeAdapter({ routes: (r) => r.service(TestService, interopService), grpc: true }),
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closer.add(server, (s) => new Promise<void>((resolve) => s.close(() => resolve())));
  const address = server.address();
  if (typeof address !== "object" || address === null) throw new Error("no port bound");
  return address.port;
}
