/**
 * `mqrpc call` run as a process against real brokers: every RPC kind with
 * JSON in and out, stdin streamed for client and bidi streams, headers and
 * trailers, status exit codes, --timeout, SIGTERM, and a 20 MiB bytes field
 * from a file, byte-exact. Each test serves TestService from this process
 * under a server id of its own, so the tests run concurrently (they mostly
 * wait for processes).
 */
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { describe, expect, it, type TestContext } from "vitest";
import { forBrokersWhere, type RunTarget } from "../../../test/brokers/targets.js";
import { SimpleResponseSchema, TestService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { FaultProxy } from "../../../test/support/fault-proxy.js";
import { interopService } from "../../../test/support/interop-service.js";
import {
  Closer,
  deferred,
  startServer,
  uniqueServerId,
} from "../../../test/support/rpc-fixture.js";
import { brokerArgs, CLI_BIN, CliProcess, type CliResult } from "./support/cli-process.js";

const SERVICE = TestService.typeName;

/**
 * A server of TestService for one test (the interop service, plus what the
 * test watches), and `mqrpc call` runs against it; all closed when the
 * test finishes.
 */
async function callFixture(target: RunTarget, context: TestContext) {
  const closer = new Closer();
  context.onTestFinished(() => closer.closeAll());
  const serverId = uniqueServerId("cli-call");
  const arrivals: number[] = [];
  const arrived = new Set<() => void>();
  const uploads: Uint8Array[] = [];
  const duplexEnded = deferred<unknown>();
  const impl: Partial<ServiceImpl<typeof TestService>> = {
    ...interopService,
    async streamingInputCall(requests) {
      let size = 0;
      for await (const r of requests) {
        const body = r.payload?.body ?? new Uint8Array(0);
        size += body.byteLength;
        if (body.byteLength > 1024) uploads.push(body);
        arrivals.push(body.byteLength);
        for (const wake of [...arrived]) wake();
      }
      return { aggregatedPayloadSize: size };
    },
    async *fullDuplexCall(requests, ctx) {
      try {
        for await (const r of requests) {
          for (const p of r.responseParameters) yield { payload: { body: new Uint8Array(p.size) } };
        }
        // A call that ended early ends the request stream too: the signal says why.
        duplexEnded.resolve(ctx.signal.aborted ? ctx.signal.reason : "ok");
      } catch (e) {
        duplexEnded.resolve(ctx.signal.aborted ? ctx.signal.reason : e);
        throw e;
      }
    },
    unimplementedCall() {
      const error = new ConnectError("not today", Code.FailedPrecondition);
      error.details.push({
        desc: SimpleResponseSchema,
        value: { payload: { body: new Uint8Array([1, 2]) } },
      });
      throw error;
    },
  };
  const server = await startServer(closer, target, {
    serverId,
    maxMessageBytes: 32 * 1024 * 1024,
    maxReassemblyBytes: 256 * 1024 * 1024,
  });
  server.service(TestService, impl);
  await server.announced();
  const dir = closer.add(mkdtempSync(join(tmpdir(), "mqrpc-cli-call-")), (d) =>
    rmSync(d, { recursive: true, force: true }),
  );
  const args = (...rest: string[]) => ["call", ...brokerArgs(target), serverId, ...rest];
  const start = (rest: string[]) => closer.add(CliProcess.start(args(...rest)), (p) => p.kill());
  return {
    serverId,
    dir,
    arrivals,
    uploads,
    duplexEnd: () => duplexEnded.promise,
    args,
    /** Starts `mqrpc call … <server id> <rest>`. */
    start,
    /** Runs `mqrpc call … <server id> <rest>` to its end, `input` on stdin. */
    run(rest: string[], input?: string): Promise<CliResult> {
      const p = start(rest);
      if (input !== undefined) p.child.stdin.end(input);
      else p.endInput();
      return p.exited;
    },
    /** Resolves once `count` request messages of StreamingInputCall arrived in all. */
    untilArrivals(count: number) {
      return new Promise<void>((resolve) => {
        const check = () => {
          if (arrivals.length < count) return;
          arrived.delete(check);
          resolve();
        };
        arrived.add(check);
        check();
      });
    },
  };
}

// Each test waits mostly for processes that share two cores: a minute each.
describe.concurrent("mqrpc call", { timeout: 60_000 }, () => {
  forBrokersWhere(
    (t) => t.kind === "aedes" || t.name === "mosquitto-5",
    (target) => {
      it("unary: JSON in, JSON out; -H headers go out, -v shows headers, trailers and timing", async (context) => {
        const f = await callFixture(target, context);
        const r = await f.run([
          `${SERVICE}/UnaryCall`,
          "-d",
          '{"responseSize": 3}',
          "-H",
          "x-grpc-test-echo-initial: hello",
          "-H",
          "x-grpc-test-echo-trailing-bin: AAEC",
          "-v",
        ]);
        expect(r.stderr).toContain("* ok after");
        expect(r.code).toBe(0);
        expect(r.stdout).toBe('{"payload":{"body":"AAAA"}}\n');
        expect(r.stderr).toContain("> x-grpc-test-echo-initial: hello");
        expect(r.stderr).toContain("< x-grpc-test-echo-initial: hello");
        expect(r.stderr).toContain("< (trailer) x-grpc-test-echo-trailing-bin: AAEC");
        expect(r.stderr).toMatch(/\* connected to .* in \d+\.\d ms/);
        expect(r.stderr).toMatch(/\* schema from server reflection in \d+\.\d ms/);
      });

      it("server streaming: one JSON line per response message", async (context) => {
        const f = await callFixture(target, context);
        const r = await f.run([
          `${SERVICE}/StreamingOutputCall`,
          "-d",
          '{"responseParameters": [{"size": 1}, {"size": 2}, {"size": 3}]}',
        ]);
        expect(r.code).toBe(0);
        expect(r.stdout.split("\n")).toEqual([
          '{"payload":{"body":"AA=="}}',
          '{"payload":{"body":"AAA="}}',
          '{"payload":{"body":"AAAA"}}',
          "",
        ]);
      });

      it("client streaming: stdin documents are sent as they arrive", async (context) => {
        const f = await callFixture(target, context);
        const p = f.start([`${SERVICE}/StreamingInputCall`, "-d", "@-"]);
        p.write('{"payload": {"body": "AAE="}}\n');
        // The first message reaches the server while stdin is still open.
        await f.untilArrivals(1);
        p.write('{"payload": {"body": "AAECAw=="}} {"payload": {}}');
        p.endInput();
        const r = await p.exited;
        expect(r.stderr).toBe("");
        expect(r.code).toBe(0);
        expect(JSON.parse(r.stdout)).toEqual({ aggregatedPayloadSize: 6 });
        expect(f.arrivals).toEqual([2, 4, 0]);
      });

      it("bidi streaming: each document is answered before the next is written", async (context) => {
        const f = await callFixture(target, context);
        const p = f.start([`${SERVICE}/FullDuplexCall`, "-d", "@-"]);
        p.write('{"responseParameters": [{"size": 1}]}');
        await p.untilLine((l) => l === '{"payload":{"body":"AA=="}}');
        p.write('\n{"responseParameters": [{"size": 2}, {"size": 3}]}\n');
        await p.untilLine((l) => l === '{"payload":{"body":"AAAA"}}');
        p.endInput();
        const r = await p.exited;
        expect(r.code).toBe(0);
        expect(p.lines()).toHaveLength(3);
        expect(await f.duplexEnd()).toBe("ok");
      });

      it("exits 64 + the status code and prints code, message and details", async (context) => {
        const f = await callFixture(target, context);
        const notFound = await f.run([
          `${SERVICE}/UnaryCall`,
          "-d",
          '{"responseStatus": {"code": 5, "message": "no such thing"}}',
        ]);
        expect(notFound.code).toBe(64 + Code.NotFound);
        expect(notFound.stdout).toBe("");
        expect(JSON.parse(notFound.stderr)).toEqual({
          code: "not_found",
          message: "no such thing",
        });

        const withDetails = await f.run([`${SERVICE}/UnimplementedCall`]);
        expect(withDetails.code).toBe(64 + Code.FailedPrecondition);
        expect(JSON.parse(withDetails.stderr)).toEqual({
          code: "failed_precondition",
          message: "not today",
          details: [
            {
              type: "mqrpc.interop.v1.SimpleResponse",
              value: "CgQKAgEC",
              debug: { payload: { body: "AQI=" } },
            },
          ],
        });
      });

      it("--timeout ends the call with deadline_exceeded (exit 68), and the handler sees it", async (context) => {
        const f = await callFixture(target, context);
        // Stdin stays open: the call waits for requests until the deadline.
        const p = f.start([`${SERVICE}/FullDuplexCall`, "-d", "@-", "--timeout", "4s"]);
        const r = await p.exited;
        expect(JSON.parse(r.stderr)).toMatchObject({ code: "deadline_exceeded" });
        expect(r.code).toBe(64 + Code.DeadlineExceeded);
        expect(ConnectError.from(await f.duplexEnd()).code).toBe(Code.DeadlineExceeded);
      });

      it("a call that fails while the broker is unreachable still exits with its status (not 0)", async (context) => {
        const f = await callFixture(target, context);
        const proxy = await FaultProxy.start(target.url);
        context.onTestFinished(() => proxy.close());
        const version = brokerArgs(target).slice(2);
        const p = CliProcess.start([
          "call",
          "--mqtt",
          proxy.url,
          ...version,
          f.serverId,
          `${SERVICE}/FullDuplexCall`,
          "-d",
          "@-",
          "--timeout",
          "3s",
        ]);
        context.onTestFinished(() => p.kill());
        p.write('{"responseParameters": [{"size": 1}]}');
        await p.untilLine((l) => l.startsWith("{"));
        // The broker is gone for good: the CLI's client keeps reconnecting.
        proxy.refuse(true);
        proxy.resetAll();
        const r = await p.exited;
        expect(r.code).toBe(64 + Code.DeadlineExceeded);
        expect(r.stderr).toContain('"code": "deadline_exceeded"');
      });

      it("SIGTERM cancels a streaming call (the handler sees CANCELED) and exits 0", async (context) => {
        const f = await callFixture(target, context);
        const p = f.start([`${SERVICE}/FullDuplexCall`, "-d", "@-"]);
        p.write('{"responseParameters": [{"size": 1}]}');
        await p.untilLine((l) => l.startsWith("{"));
        const r = await p.stop("SIGTERM");
        expect(r.stderr).toContain("call canceled: interrupted by SIGTERM");
        expect(r.code).toBe(0);
        expect(ConnectError.from(await f.duplexEnd()).code).toBe(Code.Canceled);
      });

      it("uploads 20 MiB from @file into a bytes field, byte-exact, with no progress bar in a pipe", async (context) => {
        const f = await callFixture(target, context);
        const content = randomBytes(20 * 1024 * 1024);
        const file = join(f.dir, "upload.bin");
        writeFileSync(file, content);
        const r = await f.run([
          `${SERVICE}/StreamingInputCall`,
          "-d",
          `{"payload": {"body": "@${file}"}}`,
          "-v",
        ]);
        expect(r.code).toBe(0);
        expect(JSON.parse(r.stdout)).toEqual({ aggregatedPayloadSize: content.byteLength });
        expect(r.stderr).toContain("20.0 MiB from files");
        expect(r.stderr).not.toContain("upload [");
        const received = f.uploads[0] ?? new Uint8Array(0);
        expect(received.byteLength).toBe(content.byteLength);
        const digest = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
        expect(digest(received)).toBe(digest(content));
      });
    },
  );

  // What does not depend on the broker: once, on Aedes.
  forBrokersWhere(
    (t) => t.kind === "aedes",
    (target) => {
      it("prints default values with --emit-defaults, and takes Service/Method without the package", async (context) => {
        const f = await callFixture(target, context);
        const plain = await f.run(["TestService/UnaryCall", "-d", '{"responseSize": 0}']);
        expect(plain.code).toBe(0);
        expect(plain.stdout).toBe('{"payload":{}}\n');
        const defaults = await f.run([`${SERVICE}.UnaryCall`, "--emit-defaults"]);
        expect(defaults.code).toBe(0);
        expect(defaults.stdout).toBe('{"payload":{"body":""}}\n');
      });

      it("exits 1 for input that is not the request type, and for a method the server lacks", async (context) => {
        const f = await callFixture(target, context);
        const bad = await f.run([`${SERVICE}/UnaryCall`, "-d", '{"responseSize": "many"}']);
        expect(bad.code).toBe(1);
        expect(bad.stderr).toContain("request 1 is not a valid mqrpc.interop.v1.SimpleRequest");
        const badJson = await f.run([`${SERVICE}/FullDuplexCall`, "-d", "@-"], '{"a": [}');
        expect(badJson.code).toBe(1);
        expect(badJson.stderr).toContain("stdin (-d @-): request 1 is not valid JSON");
        const twice = await f.run([`${SERVICE}/UnaryCall`, "-d", "{} {}"]);
        expect(twice.code).toBe(1);
        expect(twice.stderr).toContain("give one request message");
        const missing = await f.run([`${SERVICE}/NoSuchCall`]);
        expect(missing.code).toBe(1);
        expect(missing.stderr).toContain("has no method NoSuchCall; methods: EmptyCall, UnaryCall");
      });

      it("exits 78 for a server that is not online, 76 for a service it does not serve", async (context) => {
        const f = await callFixture(target, context);
        const nobody = uniqueServerId("cli-nobody");
        // Without --schema reflection fails first; with it, the call: the same JSON status.
        const [reflecting, calling] = await Promise.all(
          [[], ["--schema", "proto"]].map((schema) => {
            const p = CliProcess.start([
              "call",
              ...brokerArgs(target),
              nobody,
              `${SERVICE}/EmptyCall`,
              ...schema,
            ]);
            p.endInput();
            return p.exited;
          }),
        );
        for (const r of [reflecting, calling]) {
          expect(r?.code).toBe(64 + Code.Unavailable);
          expect(r?.stdout).toBe("");
          expect(r?.stderr).toBe(
            `${JSON.stringify(
              {
                code: "unavailable",
                message: `server "${nobody}" has not announced itself on this broker`,
              },
              null,
              2,
            )}\n`,
          );
        }
        // In the schema (the file of TestService), not served: the server says so.
        const unimplemented = await f.run([
          "mqrpc.interop.v1.UnimplementedService/UnimplementedCall",
        ]);
        expect(unimplemented.code).toBe(64 + Code.Unimplemented);
        expect(JSON.parse(unimplemented.stderr)).toMatchObject({ code: "unimplemented" });
      });

      it("--max-message-size bounds the call's responses, naming the flag, not the reflection replies", async (context) => {
        const f = await callFixture(target, context);
        // The schema by reflection is far over 100 bytes: it still comes in.
        const small = await f.run([
          `${SERVICE}/UnaryCall`,
          "-d",
          '{"responseSize": 10}',
          "--max-message-size",
          "100",
        ]);
        expect(small.stderr).toBe("");
        expect(small.code).toBe(0);
        expect(small.stdout).toBe('{"payload":{"body":"AAAAAAAAAAAAAA=="}}\n');
        const big = await f.run([
          `${SERVICE}/UnaryCall`,
          "-d",
          '{"responseSize": 100}',
          "--max-message-size",
          "100",
        ]);
        expect(big.code).toBe(64 + Code.ResourceExhausted);
        expect(JSON.parse(big.stderr)).toEqual({
          code: "resource_exhausted",
          message: "a message of 104 bytes exceeds --max-message-size (100 bytes)",
        });
      });

      it("shows an upload progress bar on a terminal", async (context) => {
        const f = await callFixture(target, context);
        const file = join(f.dir, "progress.bin");
        writeFileSync(file, randomBytes(3 * 1024 * 1024));
        // script(1) runs the CLI on a pseudo-terminal: its stderr is a TTY there.
        const quote = (a: string) => `'${a.replaceAll("'", "'\\''")}'`;
        const command = [
          process.execPath,
          CLI_BIN,
          ...f.args(`${SERVICE}/StreamingInputCall`, "-d", `{"payload": {"body": "@${file}"}}`),
        ]
          .map(quote)
          .join(" ");
        const terminal = spawn("script", ["-qec", command, "/dev/null"], {
          stdio: ["ignore", "pipe", "pipe"],
        });
        context.onTestFinished(() => {
          terminal.kill("SIGKILL");
        });
        let output = "";
        terminal.stdout.setEncoding("utf8").on("data", (c: string) => {
          output += c;
        });
        const code = await new Promise<number | null>((resolve) => terminal.once("close", resolve));
        expect(output).toContain('{"aggregatedPayloadSize":3145728}');
        expect(code).toBe(0);
        expect(output).toContain("upload [");
        expect(output).toMatch(/100% 3\.0 MiB of 3\.0 MiB/);
      });
    },
  );
});
