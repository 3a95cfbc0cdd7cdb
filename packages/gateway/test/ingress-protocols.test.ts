/**
 * The ingress's other protocols, against a native mqrpc server: gRPC-Web
 * (binary and text, read frame by frame from plain fetch and node:http2
 * clients), the JSON codecs and the Connect protocol with the schema learned
 * by reflection over MQTT or given as a descriptor set, `buf curl` listing
 * and calling a device through reflection, protocol errors, and TLS.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import * as http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import { trailerParse } from "@connectrpc/connect/protocol-grpc-web";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { forBrokersWhere } from "../../../test/brokers/targets.js";
import {
  SimpleRequestSchema,
  StreamingOutputCallRequestSchema,
  StreamingOutputCallResponseSchema,
  TestService,
} from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { Closer, mqttOptions } from "../../../test/support/rpc-fixture.js";
import { createGrpcIngress, type GrpcIngress } from "../src/index.js";
import { grpcAddress, InteropGrpcClient } from "./support/grpc-js-interop.js";
import { type NativeDevice, startNativeDevice } from "./support/native-device.js";
import { buildInteropImage, type InteropImage } from "./support/upstream-process.js";

const run = promisify(execFile);
const BUF = new URL("../../../node_modules/.bin/buf", import.meta.url).pathname;
const ECHO_INITIAL = "x-grpc-test-echo-initial";
const ECHO_TRAILING = "x-grpc-test-echo-trailing-bin";

/** One gRPC-Web frame of a response body. */
interface Frame {
  readonly flags: number;
  readonly data: Uint8Array;
}

function frames(body: Uint8Array): Frame[] {
  const out: Frame[] = [];
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  let at = 0;
  while (at < body.byteLength) {
    const length = view.getUint32(at + 1);
    out.push({ flags: view.getUint8(at), data: body.subarray(at + 5, at + 5 + length) });
    at += 5 + length;
  }
  expect(at).toBe(body.byteLength);
  return out;
}

function unaryRequest(responseSize: number, code = 0, message = ""): Uint8Array<ArrayBuffer> {
  return encodeEnvelope(
    0,
    toBinary(
      SimpleRequestSchema,
      create(SimpleRequestSchema, { responseSize, responseStatus: { code, message } }),
    ),
  );
}

/** A POST over HTTP/2 cleartext with prior knowledge: status, headers and the whole body. */
async function h2Post(
  url: string,
  path: string,
  headers: http2.OutgoingHttpHeaders,
  body: Uint8Array,
): Promise<{
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders;
  body: Uint8Array;
}> {
  const session = http2.connect(url);
  try {
    return await new Promise((resolve, reject) => {
      const stream = session.request({ ":method": "POST", ":path": path, ...headers });
      let head: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      stream.on("response", (h) => {
        head = h;
      });
      stream.on("trailers", (t) => {
        trailers = t;
      });
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.on("end", () => resolve({ headers: head, trailers, body: Buffer.concat(chunks) }));
      stream.on("error", reject);
      stream.end(body);
    });
  } finally {
    session.close();
  }
}

forBrokersWhere(
  (t) => t.name === "aedes" || t.name === "mosquitto-5",
  (target) => {
    describe("gRPC-Web, JSON, Connect and buf curl through the ingress", () => {
      const closer = new Closer();
      let device: NativeDevice;
      let ingress: GrpcIngress;
      let headers: Record<string, string>;

      beforeAll(async () => {
        device = await startNativeDevice(closer, target);
        ingress = closer.add(await createGrpcIngress({ mqtt: mqttOptions(target) }), (i) =>
          i.close(),
        );
        headers = { "mqrpc-server-id": device.serverId };
      });
      afterAll(() => closer.closeAll());

      it("gRPC-Web over HTTP/1.1 (fetch): headers, one message, trailers in the final 0x80 frame", async () => {
        const res = await fetch(`${ingress.url}/mqrpc.interop.v1.TestService/UnaryCall`, {
          method: "POST",
          headers: {
            ...headers,
            "content-type": "application/grpc-web+proto",
            "x-grpc-web": "1",
            [ECHO_INITIAL]: "initial",
            [ECHO_TRAILING]: Buffer.from([1, 2, 3]).toString("base64"),
          },
          body: unaryRequest(314159),
        });
        expect(res.status).toBe(200);
        expect(res.headers.get("content-type")).toBe("application/grpc-web+proto");
        expect(res.headers.get(ECHO_INITIAL)).toBe("initial");
        const [message, trailer, ...rest] = frames(new Uint8Array(await res.arrayBuffer()));
        expect(rest).toEqual([]);
        expect(message?.flags).toBe(0);
        expect(message?.data.byteLength).toBeGreaterThan(314159);
        expect(trailer?.flags).toBe(0x80);
        const trailers = trailerParse(trailer?.data ?? new Uint8Array());
        expect(trailers.get("grpc-status")).toBe("0");
        expect([...Buffer.from(trailers.get(ECHO_TRAILING) ?? "", "base64")]).toEqual([1, 2, 3]);
      });

      it("gRPC-Web server streaming over HTTP/2: four message frames, then the trailer frame", async () => {
        const request = toBinary(
          StreamingOutputCallRequestSchema,
          create(StreamingOutputCallRequestSchema, {
            responseParameters: [31415, 9, 2653, 58979].map((size) => ({ size })),
          }),
        );
        const res = await h2Post(
          ingress.url,
          "/mqrpc.interop.v1.TestService/StreamingOutputCall",
          { ...headers, "content-type": "application/grpc-web+proto" },
          encodeEnvelope(0, request),
        );
        const all = frames(res.body);
        expect(all.map((f) => f.flags)).toEqual([0, 0, 0, 0, 0x80]);
        const encoded = (size: number) =>
          toBinary(
            StreamingOutputCallResponseSchema,
            create(StreamingOutputCallResponseSchema, { payload: { body: new Uint8Array(size) } }),
          ).byteLength;
        expect(all.slice(0, 4).map((f) => f.data.byteLength)).toEqual(
          [31415, 9, 2653, 58979].map(encoded),
        );
        expect(trailerParse(all[4]?.data ?? new Uint8Array()).get("grpc-status")).toBe("0");
      });

      it("gRPC-Web error before any message: trailers-only, the status in the headers", async () => {
        const res = await fetch(`${ingress.url}/mqrpc.interop.v1.TestService/UnaryCall`, {
          method: "POST",
          headers: { ...headers, "content-type": "application/grpc-web+proto" },
          body: unaryRequest(0, Code.NotFound, "no such thing: ☺"),
        });
        expect(res.headers.get("grpc-status")).toBe(String(Code.NotFound));
        expect(decodeURIComponent(res.headers.get("grpc-message") ?? "")).toBe("no such thing: ☺");
        expect((await res.arrayBuffer()).byteLength).toBe(0);
      });

      it("grpc-web-text: base64 both ways, padded runs accepted", async () => {
        // The request in two base64 runs, each with its own padding.
        const request = unaryRequest(5);
        const body =
          Buffer.from(request.subarray(0, 4)).toString("base64") +
          Buffer.from(request.subarray(4)).toString("base64");
        expect(body.slice(0, 8)).toMatch(/=$/);
        const res = await fetch(`${ingress.url}/mqrpc.interop.v1.TestService/UnaryCall`, {
          method: "POST",
          headers: { ...headers, "content-type": "application/grpc-web-text" },
          body,
        });
        expect(res.headers.get("content-type")).toBe("application/grpc-web-text+proto");
        const text = await res.text();
        // The response is one base64 run per frame.
        const bytes = Buffer.concat(
          (text.match(/[^=]+={0,2}/g) ?? []).map((run) => Buffer.from(run, "base64")),
        );
        const [message, trailer] = frames(bytes);
        expect(message?.data.byteLength).toBe(5 + 4);
        expect(trailerParse(trailer?.data ?? new Uint8Array()).get("grpc-status")).toBe("0");
      });

      it("Connect protocol with JSON, the schema learned by reflection over MQTT (HTTP/1.1 and HTTP/2)", async () => {
        for (const httpVersion of ["1.1", "2"] as const) {
          const client = createClient(
            TestService,
            createConnectTransport({ baseUrl: ingress.url, httpVersion, useBinaryFormat: false }),
          );
          let header: Headers | undefined;
          const res = await client.unaryCall(
            { responseSize: 3 },
            {
              headers: { ...headers, [ECHO_INITIAL]: "json" },
              onHeader: (h) => {
                header = h;
              },
            },
          );
          expect(res.payload?.body.byteLength).toBe(3);
          expect(header?.get(ECHO_INITIAL)).toBe("json");
          const sizes: number[] = [];
          for await (const m of client.streamingOutputCall(
            { responseParameters: [{ size: 1 }, { size: 2 }] },
            { headers },
          )) {
            sizes.push(m.payload?.body.byteLength ?? -1);
          }
          expect(sizes).toEqual([1, 2]);
          const e = await client
            .unaryCall(
              { responseStatus: { code: Code.PermissionDenied, message: "no" } },
              { headers },
            )
            .catch((err: unknown) => ConnectError.from(err));
          expect((e as ConnectError).code).toBe(Code.PermissionDenied);
          expect((e as ConnectError).rawMessage).toBe("no");
        }
      });

      it("gRPC and gRPC-Web with the JSON codec, through Connect's handlers", async () => {
        for (const transport of [
          createGrpcTransport({ baseUrl: ingress.url, useBinaryFormat: false }),
          createGrpcWebTransport({
            baseUrl: ingress.url,
            httpVersion: "2",
            useBinaryFormat: false,
          }),
        ]) {
          const client = createClient(TestService, transport);
          const res = await client.unaryCall({ responseSize: 7 }, { headers });
          expect(res.payload?.body.byteLength).toBe(7);
          const streamed = [];
          for await (const m of client.fullDuplexCall(
            (async function* () {
              yield { responseParameters: [{ size: 4 }] };
            })(),
            { headers },
          )) {
            streamed.push(m.payload?.body.byteLength);
          }
          expect(streamed).toEqual([4]);
        }
      });

      it("buf curl lists the device's services and calls a method, through reflection", async () => {
        const common = [
          "curl",
          "--protocol",
          "grpc",
          "--http2-prior-knowledge",
          "-H",
          `mqrpc-server-id: ${device.serverId}`,
          "--reflect-header",
          "*",
        ];
        const list = await run(BUF, [...common, "--list-services", ingress.url]);
        expect(list.stdout.split("\n")).toContain("mqrpc.interop.v1.TestService");
        const call = await run(BUF, [
          ...common,
          "-d",
          '{"responseSize": 3}',
          `${ingress.url}/mqrpc.interop.v1.TestService/UnaryCall`,
        ]);
        expect(JSON.parse(call.stdout)).toEqual({ payload: { body: "AAAA" } });
      });

      it("buf curl without --reflect-header: INVALID_ARGUMENT that says how to send the header", async () => {
        const failed = await run(BUF, [
          "curl",
          "--protocol",
          "grpc",
          "--http2-prior-knowledge",
          "-H",
          `mqrpc-server-id: ${device.serverId}`,
          "--list-services",
          ingress.url,
        ]).catch((e: { stderr: string }) => e);
        expect("stderr" in failed && failed.stderr).toContain("--reflect-header");
      });

      it("Connect without mqrpc-server-id: invalid_argument; to an offline device: unavailable", async () => {
        const client = createClient(
          TestService,
          createConnectTransport({ baseUrl: ingress.url, httpVersion: "2" }),
        );
        const missing = await client.emptyCall({}).catch((e: unknown) => ConnectError.from(e));
        expect((missing as ConnectError).code).toBe(Code.InvalidArgument);
        expect((missing as ConnectError).rawMessage).toContain("mqrpc-server-id");
        const offline = await client
          .emptyCall({}, { headers: { "mqrpc-server-id": `${device.serverId}-gone` } })
          .catch((e: unknown) => ConnectError.from(e));
        expect((offline as ConnectError).code).toBe(Code.Unavailable);
      });

      it("a compressed message without grpc-encoding: INTERNAL, and the device's call never runs", async () => {
        const res = await h2Post(
          ingress.url,
          "/mqrpc.interop.v1.TestService/UnaryCall",
          { ...headers, "content-type": "application/grpc", te: "trailers" },
          (() => {
            const bytes = unaryRequest(3);
            bytes[0] = 1;
            return bytes;
          })(),
        );
        const status = res.trailers["grpc-status"] ?? res.headers["grpc-status"];
        expect(status).toBe(String(Code.Internal));
        expect(res.body.byteLength).toBe(0);
      });
    });

    describe("schemas from a descriptor set, devices without reflection, limits", () => {
      const closer = new Closer();
      let image: InteropImage;
      let device: NativeDevice;
      let withSet: GrpcIngress;
      let withoutSchema: GrpcIngress;

      beforeAll(async () => {
        image = closer.add(await buildInteropImage(), (i) => i.remove());
        device = await startNativeDevice(closer, target, { reflection: false });
        withSet = closer.add(
          await createGrpcIngress({
            mqtt: mqttOptions(target),
            descriptorSet: await readFile(image.path),
            reflection: false,
            maxMessageBytes: 1000,
          }),
          (i) => i.close(),
        );
        withoutSchema = closer.add(await createGrpcIngress({ mqtt: mqttOptions(target) }), (i) =>
          i.close(),
        );
      });
      afterAll(() => closer.closeAll());

      it("Connect JSON works from the descriptorSet option alone", async () => {
        const client = createClient(
          TestService,
          createConnectTransport({
            baseUrl: withSet.url,
            httpVersion: "2",
            useBinaryFormat: false,
          }),
        );
        const res = await client.unaryCall(
          { responseSize: 2 },
          { headers: { "mqrpc-server-id": device.serverId } },
        );
        expect(res.payload?.body.byteLength).toBe(2);
      });

      it("no schema: JSON is UNIMPLEMENTED and says what to do; binary gRPC still works", async () => {
        const json = createClient(
          TestService,
          createGrpcTransport({ baseUrl: withoutSchema.url, useBinaryFormat: false }),
        );
        const e = await json
          .emptyCall({}, { headers: { "mqrpc-server-id": device.serverId } })
          .catch((err: unknown) => ConnectError.from(err));
        expect((e as ConnectError).code).toBe(Code.Unimplemented);
        expect((e as ConnectError).rawMessage).toContain("descriptorSet");
        const binary = createClient(
          TestService,
          createGrpcTransport({ baseUrl: withoutSchema.url }),
        );
        const res = await binary.unaryCall(
          { responseSize: 2 },
          { headers: { "mqrpc-server-id": device.serverId } },
        );
        expect(res.payload?.body.byteLength).toBe(2);
      });

      it("a request message over maxMessageBytes: RESOURCE_EXHAUSTED (binary and JSON)", async () => {
        for (const useBinaryFormat of [true, false]) {
          const client = createClient(
            TestService,
            createGrpcTransport({ baseUrl: withSet.url, useBinaryFormat }),
          );
          const e = await client
            .unaryCall(
              { payload: { body: new Uint8Array(5000) } },
              { headers: { "mqrpc-server-id": device.serverId } },
            )
            .catch((err: unknown) => ConnectError.from(err));
          expect((e as ConnectError).code, `binary: ${useBinaryFormat}`).toBe(
            Code.ResourceExhausted,
          );
        }
      });
    });

    describe("TLS", () => {
      const closer = new Closer();
      let device: NativeDevice;
      let ingress: GrpcIngress;
      let cert: Buffer;

      beforeAll(async () => {
        const dir = closer.add(await mkdtemp(join(tmpdir(), "mqrpc-ingress-tls-")), (d) =>
          rm(d, { recursive: true, force: true }),
        );
        const keyPath = join(dir, "key.pem");
        const certPath = join(dir, "cert.pem");
        await run("openssl", [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:prime256v1",
          "-nodes",
          "-keyout",
          keyPath,
          "-out",
          certPath,
          "-days",
          "1",
          "-subj",
          "/CN=localhost",
          "-addext",
          "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ]);
        cert = await readFile(certPath);
        device = await startNativeDevice(closer, target);
        ingress = closer.add(
          await createGrpcIngress({
            mqtt: mqttOptions(target),
            tls: { key: await readFile(keyPath), cert },
          }),
          (i) => i.close(),
        );
      });
      afterAll(() => closer.closeAll());

      it("grpc-js over TLS (ALPN h2) and Connect over HTTPS/1.1 reach the device", async () => {
        expect(ingress.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
        const client = new InteropGrpcClient(
          grpcAddress(ingress.url),
          device.serverId,
          {},
          grpc.credentials.createSsl(cert),
        );
        try {
          const { message, error } = await client.unaryCall({ responseSize: 10 });
          expect(error).toBeUndefined();
          expect(message?.payload?.body.byteLength).toBe(10);
        } finally {
          client.close();
        }
        const connect = createClient(
          TestService,
          createConnectTransport({
            baseUrl: ingress.url,
            httpVersion: "1.1",
            nodeOptions: { ca: cert },
          }),
        );
        const res = await connect.unaryCall(
          { responseSize: 4 },
          { headers: { "mqrpc-server-id": device.serverId } },
        );
        expect(res.payload?.body.byteLength).toBe(4);
      });
    });
  },
);
