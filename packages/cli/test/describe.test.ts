/**
 * `mqrpc describe` run as a process: a server's schema through gRPC server
 * reflection over MQTT on real brokers, and from `--schema` (a .proto
 * directory built with buf, or a FileDescriptorSet the CLI wrote), which
 * also lets `mqrpc call` reach a server that serves no reflection.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { describe, expect, it, type TestContext } from "vitest";
import { forBrokersWhere, type RunTarget } from "../../../test/brokers/targets.js";
import { TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { interopService } from "../../../test/support/interop-service.js";
import { Closer, startServer, uniqueServerId } from "../../../test/support/rpc-fixture.js";
import { brokerArgs, CliProcess } from "./support/cli-process.js";

const TEST_SERVICE_TEXT = `// mqrpc/interop/v1/test.proto
service mqrpc.interop.v1.TestService {
  rpc EmptyCall(mqrpc.interop.v1.Empty) returns (mqrpc.interop.v1.Empty);
  rpc UnaryCall(mqrpc.interop.v1.SimpleRequest) returns (mqrpc.interop.v1.SimpleResponse);
  rpc StreamingOutputCall(mqrpc.interop.v1.StreamingOutputCallRequest) returns (stream mqrpc.interop.v1.StreamingOutputCallResponse);
  rpc StreamingInputCall(stream mqrpc.interop.v1.StreamingInputCallRequest) returns (mqrpc.interop.v1.StreamingInputCallResponse);
  rpc FullDuplexCall(stream mqrpc.interop.v1.StreamingOutputCallRequest) returns (stream mqrpc.interop.v1.StreamingOutputCallResponse);
  rpc UnimplementedCall(mqrpc.interop.v1.Empty) returns (mqrpc.interop.v1.Empty);
}
`;

function fixture(target: RunTarget, context: TestContext) {
  const closer = new Closer();
  context.onTestFinished(() => closer.closeAll());
  const dir = closer.add(mkdtempSync(join(tmpdir(), "mqrpc-cli-describe-")), (d) =>
    rmSync(d, { recursive: true, force: true }),
  );
  return {
    dir,
    /** Runs `mqrpc <args>` to its end. */
    async run(...args: string[]) {
      const p = closer.add(CliProcess.start(args), (c) => c.kill());
      p.endInput();
      return p.exited;
    },
    async serve(options: { reflection?: boolean } = {}) {
      const serverId = uniqueServerId("cli-describe");
      const server = await startServer(closer, target, { serverId, ...options });
      server.service(TestService, interopService);
      await server.announced();
      return serverId;
    },
  };
}

describe.concurrent("mqrpc describe", { timeout: 60_000 }, () => {
  forBrokersWhere(
    (t) => t.kind === "aedes" || t.name === "mosquitto-3.1.1",
    (target) => {
      it("lists services and describes symbols through reflection; writes a descriptor set for --schema", async (context) => {
        const f = fixture(target, context);
        const serverId = await f.serve();
        const broker = brokerArgs(target);
        const set = join(f.dir, "schema.binpb");

        const listing = await f.run("describe", ...broker, serverId, "--descriptor-set-out", set);
        expect(listing.stderr).toBe("");
        expect(listing.code).toBe(0);
        // The server's one service; reflection's own are left out.
        expect(listing.stdout).toBe(TEST_SERVICE_TEXT);

        const method = await f.run(
          "describe",
          ...broker,
          serverId,
          "mqrpc.interop.v1.TestService/UnaryCall",
          "--format",
          "json",
        );
        expect(method.code).toBe(0);
        expect(JSON.parse(method.stdout)).toMatchObject({
          kind: "method",
          name: "mqrpc.interop.v1.TestService/UnaryCall",
          methodKind: "unary",
          request: {
            name: "mqrpc.interop.v1.SimpleRequest",
            fields: [
              { name: "response_size", jsonName: "responseSize", number: 1, type: "int32" },
              { name: "payload", number: 2, type: "mqrpc.interop.v1.Payload" },
              { name: "response_status", number: 3, type: "mqrpc.interop.v1.EchoStatus" },
            ],
          },
          response: { name: "mqrpc.interop.v1.SimpleResponse" },
        });

        // The descriptor set stands in for reflection: no broker needed.
        const offline = await f.run(
          "describe",
          "--mqtt",
          "mqtt://127.0.0.1:9",
          serverId,
          "mqrpc.interop.v1.Payload",
          "--schema",
          set,
        );
        expect(offline.code).toBe(0);
        expect(offline.stdout).toBe("message mqrpc.interop.v1.Payload {\n  bytes body = 1;\n}\n");
      });

      it("without reflection: describe exits 76 naming --schema, call works with --schema", async (context) => {
        const f = fixture(target, context);
        const serverId = await f.serve({ reflection: false });
        const broker = brokerArgs(target);
        const refused = await f.run("describe", ...broker, serverId);
        expect(refused.code).toBe(64 + Code.Unimplemented);
        expect(refused.stderr).toContain(
          "does not answer gRPC server reflection: give its schema with --schema",
        );

        const call = await f.run(
          "call",
          ...broker,
          serverId,
          "mqrpc.interop.v1.TestService/UnaryCall",
          "-d",
          '{"responseSize": 2}',
          "--schema",
          "proto",
          "-v",
        );
        expect(call.code).toBe(0);
        expect(call.stdout).toBe('{"payload":{"body":"AAA="}}\n');
        expect(call.stderr).toContain("* schema from --schema proto in");
      });
    },
  );

  forBrokersWhere(
    (t) => t.kind === "aedes",
    (target) => {
      it("reads --schema from a .proto directory with buf build, and names what it cannot find", async (context) => {
        const f = fixture(target, context);
        const all = await f.run("describe", "some-device", "--schema", "proto");
        expect(all.code).toBe(0);
        expect(all.stdout).toContain("service mqrpc.example.device.v1.DeviceService {");
        expect(all.stdout).toContain(TEST_SERVICE_TEXT);
        expect(all.stdout).not.toContain("grpc.reflection");

        const state = await f.run(
          "describe",
          "some-device",
          "mqrpc.v1.Presence.State",
          "--schema",
          "proto",
        );
        expect(state.stdout).toBe(
          "enum mqrpc.v1.Presence.State {\n  STATE_UNSPECIFIED = 0;\n  STATE_ONLINE = 1;\n  STATE_OFFLINE = 2;\n  STATE_DISCONNECTED = 3;\n}\n",
        );

        const unknown = await f.run("describe", "some-device", "acme.Nothing", "--schema", "proto");
        expect(unknown.code).toBe(1);
        expect(unknown.stderr).toContain("no symbol acme.Nothing in the schema");

        const missing = await f.run("describe", "some-device", "--schema", join(f.dir, "absent"));
        expect(missing.code).toBe(1);
        expect(missing.stderr).toMatch(/--schema: buf build .*absent failed/);
      });
    },
  );
});
