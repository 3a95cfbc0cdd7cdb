/**
 * `mqrpc expose` and `mqrpc forward` run as processes against real
 * brokers: a gRPC server reached through a forwarded local port, over MQTT
 * to the exposed virtual port, serves a real call from a standard gRPC
 * client. SIGTERM stops both with exit 0, and leaves the exposed server
 * OFFLINE in its retained presence.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { type BrokerTarget, forBrokersWhere } from "../../../test/brokers/targets.js";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { Presence_State, PresenceObserver } from "../../../test/support/presence-observer.js";
import { Closer, uniqueServerId } from "../../../test/support/rpc-fixture.js";
import { brokerArgs, CliProcess } from "./support/cli-process.js";
import { startGrpcUpstream } from "./support/grpc-upstream.js";

/** `mqrpc forward` of `serverId`'s virtual port 50051 to a free local port. */
function forwardArgs(target: BrokerTarget, serverId: string): string[] {
  return [
    "forward",
    ...brokerArgs(target),
    "--server-id",
    serverId,
    "--port",
    "50051",
    "--listen",
    "127.0.0.1:0",
  ];
}

/** Waits until a started `mqrpc forward` listens; a TestService client through its port. */
async function startForward(forward: CliProcess) {
  const listening = await forward.untilLine((l) => / listening /.test(l));
  const port = /listening 127\.0\.0\.1:(\d+) -> /.exec(listening)?.[1];
  expect(port).toMatch(/^\d+$/);
  const client = createClient(
    TestService,
    createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }),
  );
  return { forward, client };
}

describe.concurrent("mqrpc expose and forward", { timeout: 60_000 }, () => {
  forBrokersWhere(
    (t) => t.kind === "aedes" || t.name === "mosquitto-5",
    (target) => {
      it("carry a gRPC call from a local port to a device's target; SIGTERM exits 0, OFFLINE", async (context) => {
        const closer = new Closer();
        context.onTestFinished(() => closer.closeAll());
        const start = (args: string[]) => closer.add(CliProcess.start(args), (p) => p.kill());
        const grpcPort = await startGrpcUpstream(closer);
        const serverId = uniqueServerId("cli-expose");
        const presence = closer.add(
          await PresenceObserver.start(target.url, serverId, target.mqttOptions),
          (o) => o.close(),
        );

        const expose = start([
          "expose",
          ...brokerArgs(target),
          "--server-id",
          serverId,
          "--port",
          "50051",
          "--target",
          `127.0.0.1:${grpcPort}`,
        ]);
        await expose.untilLine((l) => / online /.test(l));
        const { forward, client } = await startForward(start(forwardArgs(target, serverId)));
        const unary = await client.unaryCall({ responseSize: 4 }, { timeoutMs: 20_000 });
        expect(unary.payload?.body.byteLength).toBe(4);
        const sizes: number[] = [];
        for await (const r of client.streamingOutputCall(
          { responseParameters: [{ size: 1 }, { size: 2 }] },
          { timeoutMs: 20_000 },
        )) {
          sizes.push(r.payload?.body.byteLength ?? -1);
        }
        expect(sizes).toEqual([1, 2]);
        await expose.untilLine((l) => / connection /.test(l));

        const forwardEnd = await forward.stop("SIGTERM");
        expect(forwardEnd.code).toBe(0);
        expect(forwardEnd.stdout).toMatch(/ stopping on SIGTERM .*\n.* stopped 127\.0\.0\.1:/);
        const exposeEnd = await expose.stop("SIGTERM");
        expect(exposeEnd.code).toBe(0);
        expect(exposeEnd.stdout).toMatch(/ stopping on SIGTERM .*\n.* offline /);
        await presence.until(
          (s) => s.size > 0 && [...s.values()].every((v) => v === Presence_State.OFFLINE),
        );
      });

      // Mosquitto closes the old connection without MQTT 5 reason 0x8E, and
      // Aedes speaks MQTT 3.1.1, which has none: the two processes settle it
      // by their presence, within a reconnect or two.
      it("a second expose of the same server id stops with exit 3 and says why; the first serves on", async (context) => {
        const closer = new Closer();
        context.onTestFinished(() => closer.closeAll());
        const start = (args: string[]) => closer.add(CliProcess.start(args), (p) => p.kill());
        const grpcPort = await startGrpcUpstream(closer);
        const serverId = uniqueServerId("cli-twin");
        const args = [
          "expose",
          ...brokerArgs(target),
          "--server-id",
          serverId,
          "--port",
          "50051",
          "--target",
          `127.0.0.1:${grpcPort}`,
        ];
        const first = start(args);
        await first.untilLine((l) => / online /.test(l));
        const second = start(args);
        const secondEnd = await second.exited;
        expect(secondEnd.code).toBe(3);
        expect(secondEnd.stderr).toMatch(
          new RegExp(
            `--server-id ${serverId}: stopped, as another process serves as this server id and keeps it \\(it started first\\): .*--shared`,
          ),
        );
        expect(secondEnd.stderr).not.toMatch(/internal error/);
        // The first still serves: a call through a forward reaches the target.
        // The second left the id offline until the first's next connect (a
        // reconnect period): the forward waits for it rather than fail fast.
        const { client } = await startForward(
          start([...forwardArgs(target, serverId), "--wait-for-server"]),
        );
        const unary = await client.unaryCall({ responseSize: 4 }, { timeoutMs: 20_000 });
        expect(unary.payload?.body.byteLength).toBe(4);
        // It may warn of the twin, but it is not the one that stays down.
        expect(first.lines().join("\n")).not.toMatch(/this one stays down/);
        expect((await first.stop("SIGTERM")).code).toBe(0);
      });
    },
  );
});
