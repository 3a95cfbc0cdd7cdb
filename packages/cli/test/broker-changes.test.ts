/**
 * What the long-running commands say about their broker, as processes: a
 * Mosquitto restart under `mqrpc gateway`, `ingress`, `forward` and
 * `expose` gives each one `broker … lost` line (not one per reconnect
 * attempt) and one `broker reconnected` line. And `mqrpc forward` and
 * `mqrpc expose` name the flag of a value the library refuses.
 */
import { createConnection, type Socket } from "node:net";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it, type TestContext } from "vitest";
import { mosquittoAvailable, startMosquitto } from "../../../test/brokers/mosquitto.js";
import { forBrokersWhere } from "../../../test/brokers/targets.js";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { Closer, uniqueServerId } from "../../../test/support/rpc-fixture.js";
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

/** Opens a TCP connection to `port` on 127.0.0.1 (closed by `closer`). */
function openTcp(closer: Closer, port: number): Socket {
  const socket = createConnection({ host: "127.0.0.1", port });
  socket.on("error", () => {});
  return closer.add(socket, (s) => s.destroy());
}

describe.runIf(mosquittoAvailable())("broker lines across a Mosquitto restart", () => {
  it("gateway, ingress, forward and expose each log the loss once, then the reconnect", {
    timeout: 90_000,
  }, async (context) => {
    const f = fixture(context);
    const broker = f.closer.add(await startMosquitto(), (b) => b.stop());
    const mqtt = (version: "3" | "5") => ["--mqtt", broker.url, "--mqtt-version", version];
    const upstreamPort = await startGrpcUpstream(f.closer);
    const gatewayId = uniqueServerId("cli-broker-gw");
    const deviceId = uniqueServerId("cli-broker-ex");
    const commands = {
      gateway: f.start([
        "gateway",
        ...mqtt("5"),
        "--server-id",
        gatewayId,
        "--upstream",
        `http://127.0.0.1:${upstreamPort}=mqrpc.interop.v1.TestService`,
      ]),
      ingress: f.start(["ingress", ...mqtt("3"), "--listen", "127.0.0.1:0"]),
      expose: f.start([
        "expose",
        ...mqtt("3"),
        "--server-id",
        deviceId,
        "--port",
        "7",
        "--target",
        `127.0.0.1:${upstreamPort}`,
      ]),
      forward: f.start([
        "forward",
        ...mqtt("5"),
        "--server-id",
        deviceId,
        "--port",
        "7",
        "--wait-for-server",
      ]),
    };
    await commands.gateway.untilLine((l) => / online /.test(l));
    await commands.expose.untilLine((l) => / online /.test(l));
    // `listening` comes before the broker connection: traffic through the
    // ingress and the forward shows that theirs are up.
    const ingressUrl = /listening (http:\/\/\S+)/.exec(
      await commands.ingress.untilLine((l) => / listening http:\/\//.test(l)),
    )?.[1];
    const response = await createClient(
      TestService,
      createGrpcTransport({ baseUrl: ingressUrl ?? "" }),
    ).unaryCall(
      { responseSize: 3 },
      { headers: { "mqrpc-server-id": gatewayId }, timeoutMs: 20_000 },
    );
    expect(response.payload?.body.byteLength).toBe(3);
    const forwardPort = /listening 127\.0\.0\.1:(\d+) /.exec(
      await commands.forward.untilLine((l) => / listening /.test(l)),
    )?.[1];
    const tcp = openTcp(f.closer, Number(forwardPort));
    await commands.expose.untilLine((l) => / connection /.test(l));
    tcp.destroy();
    for (const p of Object.values(commands)) expect(p.lines().join("\n")).not.toMatch(/ broker /);

    // Down long enough for MQTT.js to try (and fail) to reconnect more than once.
    await broker.restart({ downMs: 1500 });
    const url = broker.url.replaceAll(".", "\\.");
    const lost = new RegExp(` broker connection to ${url} lost: .+; reconnecting$`);
    const back = new RegExp(` broker reconnected to ${url} after \\d+\\.\\d s$`);
    for (const [name, p] of Object.entries(commands)) {
      await p.untilLine((l) => lost.test(l));
      await p.untilLine((l) => back.test(l));
      const brokerLines = p.lines().filter((l) => / broker /.test(l));
      expect(brokerLines, name).toHaveLength(2);
      expect(brokerLines[0], name).toMatch(lost);
      expect(brokerLines[1], name).toMatch(back);
    }
    for (const [name, p] of Object.entries(commands)) {
      const end = await p.stop("SIGTERM");
      expect(end.code, `${name}: ${end.stderr}`).toBe(0);
    }
  });
});

describe.concurrent("mqrpc forward and expose name the flag of a refused value", () => {
  forBrokersWhere(
    (t) => t.kind === "aedes",
    (target) => {
      const refused = async (context: TestContext, args: string[]) => {
        const end = await fixture(context).start([...args, ...brokerArgs(target)]).exited;
        expect(end.code, end.stderr).toBe(2);
        return end.stderr;
      };

      it("forward: --port 0 and an empty --server-id", async (context) => {
        expect(await refused(context, ["forward", "--server-id", "d", "--port", "0"])).toBe(
          "error: option '--port <port>' argument '0' is invalid. must be a port number from 1 to 65535.\n" +
            "(run with --help for usage)\n",
        );
        expect(await refused(context, ["forward", "--server-id", "", "--port", "22"])).toBe(
          "error: option '--server-id <id>' argument '' is invalid. must not be empty.\n" +
            "(run with --help for usage)\n",
        );
      });

      it("expose: a --target with port 0", async (context) => {
        expect(
          await refused(context, [
            "expose",
            "--server-id",
            "d",
            "--port",
            "22",
            "--target",
            "127.0.0.1:0",
          ]),
        ).toBe('mqrpc: --target "127.0.0.1:0": the port must be from 1 to 65535.\n');
      });
    },
  );
});
