/**
 * `mqrpc list` run as a process against real brokers: the servers online
 * from their retained presence, and with --watch a server coming online
 * and going away (killed: its last will) as it happens; SIGTERM ends the
 * watch with exit 0.
 */
import { describe, expect, it, type TestContext } from "vitest";
import { forBrokersWhere, type RunTarget } from "../../../test/brokers/targets.js";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { ChildServer } from "../../../test/support/child-server-process.js";
import { interopService } from "../../../test/support/interop-service.js";
import { Closer, startServer, uniqueServerId } from "../../../test/support/rpc-fixture.js";
import { brokerArgs, CliProcess } from "./support/cli-process.js";

interface ListedServer {
  serverId: string;
  state: string;
  since: string | null;
  instances: Array<{
    instance: string;
    state: string;
    shared: boolean;
    incarnation: number;
    since: string | null;
  }>;
}

interface WatchEvent {
  time: string;
  serverId: string;
  instance: string;
  state: string;
  retained: boolean;
}

function fixture(target: RunTarget, context: TestContext) {
  const closer = new Closer();
  context.onTestFinished(() => closer.closeAll());
  return {
    closer,
    /** Starts `mqrpc list … <rest>`, killed when the test finishes. */
    start: (...rest: string[]) =>
      closer.add(CliProcess.start(["list", ...brokerArgs(target), ...rest]), (p) => p.kill()),
    /** Runs `mqrpc list … <rest>` to its end. */
    async run(...rest: string[]) {
      const p = this.start(...rest);
      p.endInput();
      return p.exited;
    },
    async serve(serverId: string) {
      const server = await startServer(closer, target, { serverId });
      server.service(TestService, interopService);
      await server.announced();
      return server;
    },
  };
}

describe.concurrent("mqrpc list", { timeout: 60_000 }, () => {
  forBrokersWhere(
    (t) => t.kind === "aedes" || t.kind === "mosquitto",
    (target) => {
      it("lists a server while it is online; --all also lists it offline", async (context) => {
        const f = fixture(target, context);
        const serverId = uniqueServerId("cli-list");
        const started = Date.now();
        const server = await f.serve(serverId);
        const announced = Date.now();
        const online = await f.run("--format", "json");
        expect(online.code).toBe(0);
        const listed = (JSON.parse(online.stdout) as ListedServer[]).find(
          (s) => s.serverId === serverId,
        );
        expect(listed).toEqual({
          serverId,
          state: "online",
          since: expect.any(String),
          instances: [
            {
              instance: server.instanceId,
              state: "online",
              shared: false,
              incarnation: expect.any(Number),
              since: expect.any(String),
            },
          ],
        });
        // Retained before list subscribed, yet timed: the server's since_ms.
        const onlineSince = Date.parse(listed?.since ?? "");
        expect(onlineSince).toBeGreaterThanOrEqual(started);
        expect(onlineSince).toBeLessThanOrEqual(announced);
        const closing = Date.now();
        await server.close();
        const closed = Date.now();
        const after = await f.run("--all", "--format", "json");
        expect(after.code).toBe(0);
        const all = JSON.parse(after.stdout) as ListedServer[];
        const offline = all.find((s) => s.serverId === serverId);
        expect(offline?.state).toBe("offline");
        const offlineSince = Date.parse(offline?.since ?? "");
        expect(offlineSince).toBeGreaterThanOrEqual(closing);
        expect(offlineSince).toBeLessThanOrEqual(closed);
        // Without --all, only servers online are listed.
        expect(
          (JSON.parse(online.stdout) as ListedServer[]).every((s) => s.state === "online"),
        ).toBe(true);
      });

      it("--watch shows a server coming online and going away when killed; SIGTERM exits 0", async (context) => {
        const f = fixture(target, context);
        const serverId = uniqueServerId("cli-watch");
        const watch = f.start("--watch", "--format", "json");
        const events = () =>
          watch
            .lines()
            .map((l) => JSON.parse(l) as WatchEvent)
            .filter((e) => e.serverId === serverId);
        const child = f.closer.add(
          await ChildServer.start({
            url: target.url,
            protocolVersion: target.protocolVersion,
            serverId,
            handlerMs: 0,
          }),
          (c) => c.kill(),
        );
        await watch.untilLine((l) => l.includes(serverId) && l.includes('"state":"online"'));
        await child.kill();
        await watch.untilLine((l) => l.includes(serverId) && l.includes('"state":"disconnected"'));
        expect(events().map((e) => [e.instance, e.state])).toEqual([
          [child.instanceId, "online"],
          [child.instanceId, "disconnected"],
        ]);
        const end = await watch.stop("SIGTERM");
        expect(end.stderr).toBe("");
        expect(end.code).toBe(0);
      });
    },
  );

  forBrokersWhere(
    (t) => t.kind === "aedes",
    (target) => {
      it("prints a table, and one line per change with --watch", async (context) => {
        const f = fixture(target, context);
        const serverId = uniqueServerId("cli-table");
        const server = await f.serve(serverId);
        const table = await f.run();
        expect(table.code).toBe(0);
        const lines = table.stdout.split("\n");
        expect(lines[0]).toMatch(/^SERVER ID\s+STATE\s+INSTANCES\s+SINCE$/);
        expect(lines.find((l) => l.startsWith(`${serverId} `))).toMatch(
          new RegExp(
            `^${serverId.replaceAll(".", "\\.")}\\s+online\\s+1/1\\s+\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z$`,
          ),
        );

        const watch = f.start("--watch");
        await watch.untilLine((l) => l.startsWith(`${serverId} `));
        await server.close();
        const line = await watch.untilLine((l) => / offline /.test(l) && l.includes(serverId));
        expect(line).toMatch(
          new RegExp(
            `^\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z offline ${serverId.replaceAll(".", "\\.")} \\(instance ${server.instanceId}, incarnation \\d+\\)$`,
          ),
        );
        expect((await watch.stop("SIGINT")).code).toBe(0);
      });
    },
  );
});
