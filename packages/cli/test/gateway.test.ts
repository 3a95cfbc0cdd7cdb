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
import { freePort } from "../../../test/brokers/free-port.js";
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
    start: (args: string[], env: Record<string, string> = {}) =>
      closer.add(CliProcess.start(args, env), (p) => p.kill()),
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

      it("gateway: a start error is one line on stderr naming the --upstream form to use, exit 1", async (context) => {
        const f = fixture(context);
        // Connect for Node serves no gRPC server reflection.
        const plain = `http://127.0.0.1:${await startGrpcUpstream(f.closer)}`;
        const other = `http://127.0.0.1:${await startGrpcUpstream(f.closer)}`;
        const nothing = `http://127.0.0.1:${await freePort()}`;
        const gateway = async (args: string[], env: Record<string, string> = {}) => {
          const r = await f.start(
            ["gateway", ...brokerArgs(target), "--server-id", uniqueServerId("gw"), ...args],
            env,
          ).exited;
          expect(r.code, r.stderr).toBe(1);
          return r.stderr;
        };
        const oneLine = (stderr: string) => {
          expect(stderr.endsWith("\n"), stderr).toBe(true);
          expect(stderr.slice(0, -1), stderr).not.toContain("\n");
          return stderr;
        };

        const unreflected = oneLine(await gateway(["--upstream", plain]));
        expect(unreflected).toMatch(
          new RegExp(
            `^mqrpc: upstream ${plain.replaceAll(".", "\\.")}: server reflection failed: `,
          ),
        );
        expect(unreflected).toContain(
          `; on the command line: --upstream ${plain}=pkg.Service[,…] or --upstream ${plain}=@image.binpb\n`,
        );

        const twice = oneLine(
          await gateway([
            "--upstream",
            `${plain}=mqrpc.interop.v1.TestService`,
            "--upstream",
            `${other}=mqrpc.interop.v1.TestService`,
          ]),
        );
        expect(twice).toMatch(
          /^mqrpc: service "mqrpc\.interop\.v1\.TestService" is offered by two upstreams/,
        );
        expect(twice).toContain(
          `; on the command line: --upstream ${plain}=pkg.Service[,…], --upstream ${other}=pkg.Service[,…]\n`,
        );

        const absent = oneLine(await gateway(["--upstream", nothing, "--start-timeout", "500ms"]));
        expect(absent).toMatch(/^mqrpc: upstream .*: server reflection failed: /);
        expect(absent).toContain(
          `; no answer within --start-timeout 500ms: is the upstream up? (with --upstream ${nothing}=pkg.Service[,…] `,
        );

        // MQRPC_DEBUG adds the whole error after that line, the library's own (with its stack) as the cause.
        const debug = await gateway(["--upstream", plain], { MQRPC_DEBUG: "1" });
        expect(debug.startsWith(unreflected)).toBe(true);
        expect(debug.slice(unreflected.length)).toMatch(
          /\[cause\]: ReflectionError: upstream .*\n\s+at /,
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
