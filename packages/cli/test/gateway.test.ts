/**
 * `mqrpc gateway` and `mqrpc ingress` run as processes against real
 * brokers, each serving a real call: the gateway puts a gRPC server (Connect
 * for Node, in this process) behind a server id that `mqrpc call` reaches;
 * the ingress carries a gRPC call from a standard client to a device over
 * MQTT. SIGTERM stops both with exit 0, the gateway's presence OFFLINE.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it, type TestContext } from "vitest";
import { forBrokersWhere } from "../../../test/brokers/targets.js";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "../../../test/support/interop-service.js";
import { Presence_State, PresenceObserver } from "../../../test/support/presence-observer.js";
import { Closer, startServer, uniqueServerId } from "../../../test/support/rpc-fixture.js";
import { brokerArgs, CliProcess } from "./support/cli-process.js";
import { startGrpcUpstream } from "./support/grpc-upstream.js";

function fixture(context: TestContext) {
  const closer = new Closer();
  context.onTestFinished(() => closer.closeAll());
  return {
    closer,
    start: (args: string[]) => closer.add(CliProcess.start(args), (p) => p.kill()),
  };
}

describe.concurrent("mqrpc gateway and ingress", { timeout: 60_000 }, () => {
  forBrokersWhere(
    (t) => t.kind === "aedes" || t.name === "mosquitto-5",
    (target) => {
      it("gateway: serves a gRPC server over MQTT to mqrpc call; SIGTERM leaves it OFFLINE and exits 0", async (context) => {
        const f = fixture(context);
        const upstream = `http://127.0.0.1:${await startGrpcUpstream(f.closer)}`;
        const serverId = uniqueServerId("cli-gateway");
        const presence = f.closer.add(
          await PresenceObserver.start(target.url, serverId, target.mqttOptions),
          (o) => o.close(),
        );
        const gateway = f.start([
          "gateway",
          ...brokerArgs(target),
          "--server-id",
          serverId,
          "--upstream",
          `${upstream}=mqrpc.interop.v1.TestService`,
        ]);
        await gateway.untilLine((l) => / online /.test(l));
        expect(
          gateway
            .lines()
            .some((l) => l.endsWith(` route mqrpc.interop.v1.TestService -> ${upstream}`)),
        ).toBe(true);
        await presence.until((s) => [...s.values()].includes(Presence_State.ONLINE));

        const call = f.start([
          "call",
          ...brokerArgs(target),
          serverId,
          "mqrpc.interop.v1.TestService/StreamingOutputCall",
          "-d",
          '{"responseParameters": [{"size": 1}, {"size": 2}]}',
          "--schema",
          "proto",
        ]);
        call.endInput();
        const called = await call.exited;
        expect(called.stderr).toBe("");
        expect(called.code).toBe(0);
        expect(called.stdout).toBe('{"payload":{"body":"AA=="}}\n{"payload":{"body":"AAA="}}\n');

        const stopped = await gateway.stop("SIGTERM");
        expect(stopped.code).toBe(0);
        expect(stopped.stdout).toMatch(/ stopping on SIGTERM\n.* offline /);
        // What the broker retains for the gateway says OFFLINE, not ONLINE.
        await presence.until(
          (s) => s.size > 0 && [...s.values()].every((v) => v === Presence_State.OFFLINE),
        );
      });

      it("ingress: a gRPC client calls a device over MQTT through it; SIGTERM exits 0", async (context) => {
        const f = fixture(context);
        const serverId = uniqueServerId("cli-ingress");
        const device = await startServer(f.closer, target, { serverId });
        device.service(TestService, interopService);
        await device.announced();
        const ingress = f.start(["ingress", ...brokerArgs(target), "--listen", "127.0.0.1:0"]);
        const line = await ingress.untilLine((l) => / listening http:\/\//.test(l));
        const url = /listening (http:\/\/[^ ]+)/.exec(line)?.[1] ?? "";
        const client = createClient(TestService, createGrpcTransport({ baseUrl: url }));
        const response = await client.unaryCall(
          { responseSize: 5 },
          { headers: { "mqrpc-server-id": serverId }, timeoutMs: 20_000 },
        );
        expect(response.payload?.body.byteLength).toBe(5);
        const stopped = await ingress.stop("SIGTERM");
        expect(stopped.code).toBe(0);
        expect(stopped.stdout).toMatch(/ stopping on SIGTERM\n.* stopped http:\/\//);
      });
    },
  );
});
