/**
 * Calls the ingress ends before the client finished sending: a gRPC client
 * streaming a long request gets the status and stops (the ingress resets
 * the stream with NO_ERROR after its response, RFC 9113 section 8.1),
 * whether the call fails before it is forwarded (no `mqrpc-server-id`, a
 * device that is not there, a service it does not serve) or the device
 * ends it early; grpc-js and `buf curl` (Go's HTTP/2 client) both. Also the
 * ingress's `maxMessageBytes` (it raises the device transports' limit, and
 * errors name it) and a repeated `mqrpc-server-id` header.
 */
import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import * as http2 from "node:http2";
import { join } from "node:path";
import { promisify } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forBrokersWhere } from "../../../test/brokers/targets.js";
import {
  SimpleRequestSchema,
  TestService,
  UnimplementedService,
} from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import {
  Closer,
  mqttOptions,
  startServer,
  uniqueServerId,
} from "../../../test/support/rpc-fixture.js";
import { createGrpcIngress, type GrpcIngress } from "../src/index.js";
import {
  grpcAddress,
  type InteropCallOptions,
  InteropGrpcClient,
} from "./support/grpc-js-interop.js";
import { buildInteropImage, type InteropImage } from "./support/upstream-process.js";

const run = promisify(execFile);
const BUF = new URL("../../../node_modules/.bin/buf", import.meta.url).pathname;

/** Messages a client streams: far more than the HTTP/2 windows (64 KiB) hold. */
const MESSAGES = 5000;
const MESSAGE_BYTES = 1024;
/** A body of this length makes the device's StreamingInputCall fail at its first message. */
const FAIL_AT_ONCE = 7;
const MiB = 1024 * 1024;

/**
 * Streams up to {@link MESSAGES} messages (honouring backpressure) until the
 * call's status comes; resolves with the status and how many were written.
 */
async function streamUntilStatus(
  client: InteropGrpcClient,
  body: Uint8Array,
  options: InteropCallOptions = {},
): Promise<{ status: grpc.StatusObject; written: number }> {
  const { call, outcome } = client.streamingInputCall(options);
  call.on("error", () => {
    // The status carries the outcome.
  });
  let status: grpc.StatusObject | undefined;
  const ended = outcome.then((o) => {
    status = o.status;
  });
  let written = 0;
  while (status === undefined && written < MESSAGES) {
    written++;
    if (!call.write({ payload: { body } })) {
      await Promise.race([ended, new Promise((resolve) => call.once("drain", resolve))]);
    }
  }
  call.end();
  await ended;
  return { status: status as grpc.StatusObject, written };
}

forBrokersWhere(
  (t) => t.name === "aedes" || t.name === "mosquitto-5",
  (target) => {
    describe("calls the ingress ends while the client still sends", () => {
      const closer = new Closer();
      let device: string;
      let bare: string;
      let ingress: GrpcIngress;
      let image: InteropImage;
      let client: InteropGrpcClient;
      let jsonl: string;

      beforeAll(async () => {
        image = closer.add(await buildInteropImage(), (i) => i.remove());
        device = uniqueServerId("ingress-early");
        const server = await startServer(closer, target, { serverId: device });
        server.service(TestService, {
          async streamingInputCall(requests) {
            let aggregatedPayloadSize = 0;
            for await (const request of requests) {
              const size = request.payload?.body.byteLength ?? 0;
              if (size === FAIL_AT_ONCE) {
                throw new ConnectError(
                  "the device stops at the first message",
                  Code.FailedPrecondition,
                );
              }
              aggregatedPayloadSize += size;
            }
            return { aggregatedPayloadSize };
          },
        });
        // A device that serves no TestService.
        bare = uniqueServerId("ingress-early-bare");
        (await startServer(closer, target, { serverId: bare })).service(UnimplementedService, {});
        ingress = closer.add(await createGrpcIngress({ mqtt: mqttOptions(target) }), (i) =>
          i.close(),
        );
        client = closer.add(new InteropGrpcClient(grpcAddress(ingress.url), device), (c) =>
          c.close(),
        );
        const line = `${JSON.stringify({ payload: { body: Buffer.alloc(MESSAGE_BYTES).toString("base64") } })}\n`;
        jsonl = join(image.dir, "many.jsonl");
        await writeFile(jsonl, line.repeat(MESSAGES));
      });
      afterAll(() => closer.closeAll());

      it("grpc-js: a normal long client stream is unaffected", async () => {
        const { status, written } = await streamUntilStatus(client, new Uint8Array(MESSAGE_BYTES));
        expect(status.code).toBe(grpc.status.OK);
        expect(written).toBe(MESSAGES);
      });

      it("grpc-js: the status of every early end arrives while the client streams", async () => {
        const body = new Uint8Array(MESSAGE_BYTES);
        const missing = await streamUntilStatus(client, body, { noServerId: true });
        expect(missing.status.code).toBe(grpc.status.INVALID_ARGUMENT);
        expect(missing.status.details).toContain("missing request header mqrpc-server-id");

        const absent = new InteropGrpcClient(grpcAddress(ingress.url), `${device}-gone`);
        try {
          const gone = await streamUntilStatus(absent, body);
          expect(gone.status.code).toBe(grpc.status.UNAVAILABLE);
        } finally {
          absent.close();
        }

        const bareClient = new InteropGrpcClient(grpcAddress(ingress.url), bare);
        try {
          const unserved = await streamUntilStatus(bareClient, body);
          expect(unserved.status.code).toBe(grpc.status.UNIMPLEMENTED);
        } finally {
          bareClient.close();
        }

        const early = await streamUntilStatus(client, new Uint8Array(FAIL_AT_ONCE));
        expect(early.status.code).toBe(grpc.status.FAILED_PRECONDITION);
        expect(early.status.details).toBe("the device stops at the first message");
      });

      /** buf curl streaming {@link MESSAGES} messages from a file; killed after 20 s. */
      const bufCurl = async (
        protocol: "grpc" | "grpcweb",
        serverId: string | undefined,
        file: string,
      ) => {
        const args = [
          "curl",
          "--protocol",
          protocol,
          "--http2-prior-knowledge",
          "--schema",
          image.path,
          ...(serverId !== undefined ? ["-H", `mqrpc-server-id: ${serverId}`] : []),
          "-d",
          `@${file}`,
          `${ingress.url}/mqrpc.interop.v1.TestService/StreamingInputCall`,
        ];
        return run(BUF, args, { timeout: 20_000 }).then(
          (out) => ({ ok: true as const, stdout: out.stdout, stderr: out.stderr, killed: false }),
          (e: { stdout: string; stderr: string; killed?: boolean }) => ({
            ok: false as const,
            stdout: e.stdout,
            stderr: e.stderr,
            killed: e.killed === true,
          }),
        );
      };

      for (const protocol of ["grpc", "grpcweb"] as const) {
        it(`buf curl --protocol ${protocol}: exits with the status of every early end`, async () => {
          const missing = await bufCurl(protocol, undefined, jsonl);
          expect(missing.killed).toBe(false);
          expect(missing.stderr).toContain("invalid_argument");
          expect(missing.stderr).toContain("missing request header mqrpc-server-id");

          const gone = await bufCurl(protocol, `${device}-gone`, jsonl);
          expect(gone.killed).toBe(false);
          expect(gone.stderr).toContain("unavailable");

          const unserved = await bufCurl(protocol, bare, jsonl);
          expect(unserved.killed).toBe(false);
          expect(unserved.stderr).toContain("unimplemented");

          const failing = join(image.dir, "failing.jsonl");
          const first = `${JSON.stringify({ payload: { body: Buffer.alloc(FAIL_AT_ONCE).toString("base64") } })}\n`;
          const rest = `${JSON.stringify({ payload: { body: Buffer.alloc(MESSAGE_BYTES).toString("base64") } })}\n`;
          await writeFile(failing, first + rest.repeat(MESSAGES));
          const early = await bufCurl(protocol, device, failing);
          expect(early.killed).toBe(false);
          expect(early.stderr).toContain("failed_precondition");

          const ok = await bufCurl(protocol, device, jsonl);
          expect(ok.stderr).toBe("");
          expect(JSON.parse(ok.stdout)).toEqual({
            aggregatedPayloadSize: MESSAGES * MESSAGE_BYTES,
          });
        }, 60_000);
      }
    });

    describe("maxMessageBytes and mqrpc-server-id of the ingress", () => {
      const closer = new Closer();
      let device: string;
      let big: GrpcIngress;
      let small: GrpcIngress;

      beforeAll(async () => {
        device = uniqueServerId("ingress-limits");
        const server = await startServer(closer, target, {
          serverId: device,
          maxMessageBytes: 16 * MiB,
        });
        server.service(TestService, {
          async unaryCall(request) {
            return { payload: { body: new Uint8Array(request.responseSize) } };
          },
        });
        big = closer.add(
          await createGrpcIngress({ mqtt: mqttOptions(target), maxMessageBytes: 16 * MiB }),
          (i) => i.close(),
        );
        small = closer.add(
          await createGrpcIngress({ mqtt: mqttOptions(target), maxMessageBytes: 1000 }),
          (i) => i.close(),
        );
      });
      afterAll(() => closer.closeAll());

      it("maxMessageBytes alone carries 6 MiB messages both ways", async () => {
        const client = new InteropGrpcClient(grpcAddress(big.url), device, {
          "grpc.max_send_message_length": -1,
          "grpc.max_receive_message_length": -1,
        });
        try {
          const outcome = await client.unaryCall({
            responseSize: 6 * MiB,
            payload: { body: new Uint8Array(6 * MiB) },
          });
          expect(outcome.status?.code).toBe(grpc.status.OK);
          expect(outcome.message?.payload?.body.byteLength).toBe(6 * MiB);
        } finally {
          client.close();
        }
      });

      it("a request over maxMessageBytes: RESOURCE_EXHAUSTED naming maxMessageBytes", async () => {
        const client = new InteropGrpcClient(grpcAddress(small.url), device);
        try {
          const outcome = await client.unaryCall({ payload: { body: new Uint8Array(2000) } });
          expect(outcome.status?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
          expect(outcome.status?.details).toMatch(
            /^a request message of \d+ bytes exceeds the ingress's maxMessageBytes \(1000 bytes\)$/,
          );
        } finally {
          client.close();
        }
      });

      it("two mqrpc-server-id headers: INVALID_ARGUMENT saying it must appear once", async () => {
        const session = http2.connect(small.url);
        try {
          const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
            const stream = session.request({
              ":method": "POST",
              ":path": "/mqrpc.interop.v1.TestService/UnaryCall",
              "content-type": "application/grpc",
              te: "trailers",
              "mqrpc-server-id": ["brk-1", device],
            });
            stream.on("response", (headers) => {
              if (headers["grpc-status"] !== undefined) resolve(headers);
            });
            stream.on("trailers", resolve);
            stream.on("error", reject);
            stream.resume();
            stream.end(
              encodeEnvelope(0, toBinary(SimpleRequestSchema, create(SimpleRequestSchema, {}))),
            );
          });
          expect(trailers["grpc-status"]).toBe(String(grpc.status.INVALID_ARGUMENT));
          expect(decodeURIComponent(String(trailers["grpc-message"]))).toContain(
            "mqrpc-server-id must appear once",
          );
        } finally {
          session.close();
        }
      });
    });
  },
);
