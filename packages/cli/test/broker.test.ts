/**
 * `mqrpc broker` run as a process: it prints its MQTT and WebSocket URLs,
 * servers and the other commands work through it (a call over WebSockets
 * included), and SIGTERM stops it with exit 0, closing its ports.
 */
import { connect } from "node:net";
import { describe, expect, it } from "vitest";
import type { BrokerTarget } from "../../../test/brokers/targets.js";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "../../../test/support/interop-service.js";
import { Closer, startServer, uniqueServerId } from "../../../test/support/rpc-fixture.js";
import { CliProcess } from "./support/cli-process.js";

/** Resolves true when something accepts a TCP connection on `port`, false when refused. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

describe("mqrpc broker", { timeout: 60_000 }, () => {
  it("serves MQTT and WebSockets for servers and the CLI; SIGTERM stops it with exit 0", async (context) => {
    const closer = new Closer();
    context.onTestFinished(() => closer.closeAll());
    const broker = closer.add(CliProcess.start(["broker", "--port", "0", "--ws-port", "0"]), (p) =>
      p.kill(),
    );
    const tcpLine = await broker.untilLine((l) => / listening mqtt:\/\//.test(l));
    const wsLine = await broker.untilLine((l) => / listening ws:\/\//.test(l));
    const url = tcpLine.split(" ").at(-1) ?? "";
    const wsUrl = wsLine.split(" ").at(-1) ?? "";
    expect(url).toMatch(/^mqtt:\/\/127\.0\.0\.1:\d+$/);
    expect(wsUrl).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/mqtt$/);

    const target: BrokerTarget = {
      name: "mqrpc broker",
      kind: "aedes",
      url,
      mqttOptions: { protocolVersion: 4 },
      sharedSubscriptions: true,
    };
    const serverId = uniqueServerId("cli-broker");
    const server = await startServer(closer, target, { serverId });
    server.service(TestService, interopService);
    await server.announced();

    const list = CliProcess.start(["list", "--mqtt", url, "--format", "json"]);
    list.endInput();
    const listed = await list.exited;
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([
      expect.objectContaining({ serverId, state: "online" }),
    ]);

    const call = CliProcess.start([
      "call",
      "--mqtt",
      wsUrl,
      serverId,
      "mqrpc.interop.v1.TestService/UnaryCall",
      "-d",
      '{"responseSize": 1}',
    ]);
    call.endInput();
    const called = await call.exited;
    expect(called.stderr).toBe("");
    expect(called.code).toBe(0);
    expect(called.stdout).toBe('{"payload":{"body":"AA=="}}\n');

    await server.close();
    const stopped = await broker.stop("SIGTERM");
    expect(stopped.code).toBe(0);
    expect(stopped.stdout).toMatch(/ stopping on SIGTERM\n.* stopped mqtt:\/\//);
    const port = Number(new URL(url).port);
    expect(await accepts(port)).toBe(false);
    expect(await accepts(Number(new URL(wsUrl).port))).toBe(false);
  });
});
