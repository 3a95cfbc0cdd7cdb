/**
 * `https:` upstreams: a @grpc/grpc-js server with TLS (certificates from a
 * throwaway CA, issued with openssl) behind the gateway, learned by
 * reflection; mutual TLS with and without the client certificate; a CA
 * that did not sign the server's certificate (calls fail naming the
 * upstream, a start by reflection fails within startTimeoutMs); and the
 * `tls` option's errors.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brokerSelection } from "../../../test/brokers/selection.js";
import { brokerTargets, forBrokersWhere } from "../../../test/brokers/targets.js";
import {
  type CertificateFiles,
  opensslPath,
  TestCertificateAuthority,
} from "../../../test/brokers/tls-certificates.js";
import {
  EmptySchema,
  SimpleRequestSchema,
  SimpleResponseSchema,
  StreamingOutputCallRequestSchema,
  StreamingOutputCallResponseSchema,
  TestService,
  UnimplementedService,
} from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import {
  Closer,
  mqttOptions,
  startTransport,
  uniqueServerId,
} from "../../../test/support/rpc-fixture.js";
import { createGrpcGateway, type GrpcGatewayOptions } from "../src/index.js";

const TEST_SERVICE = "mqrpc.interop.v1.TestService";
const UNIMPLEMENTED_SERVICE = "mqrpc.interop.v1.UnimplementedService";
const PROTO_ROOT = fileURLToPath(new URL("../../../proto", import.meta.url));

// CI (MQRPC_REQUIRE_BROKERS) must not skip these for want of openssl.
const runnable = opensslPath() !== undefined || brokerSelection().required;

/** A grpc-js server over TLS in this process; see {@link startTlsUpstream}. */
interface TlsUpstream {
  /** `https://127.0.0.1:<port>` */
  readonly url: string;
  close(): void;
}

const identity = (b: Buffer) => b;
const toBuffer = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

function method(path: string, responseStream: boolean) {
  return {
    path,
    requestStream: false,
    responseStream,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  };
}

/**
 * Starts a @grpc/grpc-js server with TLS (`server`'s certificate; with
 * `clientCa`, a client certificate from that CA is required) on a free
 * loopback port, serving TestService's UnaryCall and StreamingOutputCall,
 * UnimplementedService's UnimplementedCall (answering Empty) and server
 * reflection.
 */
async function startTlsUpstream(server: CertificateFiles, clientCa?: string): Promise<TlsUpstream> {
  const grpcServer = new grpc.Server();
  grpcServer.addService(
    {
      UnaryCall: method(`/${TEST_SERVICE}/UnaryCall`, false),
      StreamingOutputCall: method(`/${TEST_SERVICE}/StreamingOutputCall`, true),
    },
    {
      UnaryCall(call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) {
        const request = fromBinary(SimpleRequestSchema, call.request);
        const response = create(SimpleResponseSchema, {
          payload: { body: new Uint8Array(request.responseSize) },
        });
        callback(null, toBuffer(toBinary(SimpleResponseSchema, response)));
      },
      StreamingOutputCall(call: grpc.ServerWritableStream<Buffer, Buffer>) {
        const request = fromBinary(StreamingOutputCallRequestSchema, call.request);
        for (const p of request.responseParameters) {
          const response = create(StreamingOutputCallResponseSchema, {
            payload: { body: new Uint8Array(p.size) },
          });
          call.write(toBuffer(toBinary(StreamingOutputCallResponseSchema, response)));
        }
        call.end();
      },
    },
  );
  grpcServer.addService(
    { UnimplementedCall: method(`/${UNIMPLEMENTED_SERVICE}/UnimplementedCall`, false) },
    {
      UnimplementedCall(
        _call: grpc.ServerUnaryCall<Buffer, Buffer>,
        callback: grpc.sendUnaryData<Buffer>,
      ) {
        callback(null, toBuffer(toBinary(EmptySchema, create(EmptySchema))));
      },
    },
  );
  const definitions = protoLoader.loadSync(["mqrpc/interop/v1/test.proto"], {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
  });
  new ReflectionService(definitions, {
    services: [TEST_SERVICE, UNIMPLEMENTED_SERVICE],
  }).addToServer(grpcServer);
  const credentials = grpc.ServerCredentials.createSsl(
    clientCa === undefined ? null : readFileSync(clientCa),
    [{ cert_chain: readFileSync(server.certFile), private_key: readFileSync(server.keyFile) }],
    clientCa !== undefined,
  );
  const port = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync("127.0.0.1:0", credentials, (e, p) => (e ? reject(e) : resolve(p))),
  );
  return { url: `https://127.0.0.1:${port}`, close: () => grpcServer.forceShutdown() };
}

/** How a call or a start failed: the ConnectError (or Error) it rejected with. */
async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  return promise.then(
    () => {
      throw new Error("expected a failure");
    },
    (e: unknown) => ConnectError.from(e),
  );
}

describe.runIf(runnable)("https: upstreams", () => {
  let authority: TestCertificateAuthority;
  /** A CA that signed none of the upstreams' certificates. */
  let stranger: TestCertificateAuthority;
  let ca: Buffer;
  let clientCert: { cert: Buffer; key: Buffer };
  /** Server certificate only. */
  let serverAuth: TlsUpstream;
  /** Requires a client certificate from `authority`. */
  let mutual: TlsUpstream;

  beforeAll(async () => {
    authority = TestCertificateAuthority.create("mqrpc gateway upstream CA");
    stranger = TestCertificateAuthority.create("not the upstreams' CA");
    ca = readFileSync(authority.caFile);
    const client = authority.issueClient("mqrpc-gateway");
    clientCert = { cert: readFileSync(client.certFile), key: readFileSync(client.keyFile) };
    [serverAuth, mutual] = await Promise.all([
      startTlsUpstream(authority.issueServer()),
      startTlsUpstream(authority.issueServer(), authority.caFile),
    ]);
  });
  afterAll(() => {
    serverAuth?.close();
    mutual?.close();
    authority?.remove();
    stranger?.remove();
  });

  forBrokersWhere(
    (t) => t.name === "aedes" || t.name === "mosquitto-5",
    (target) => {
      const closer = new Closer();
      afterAll(() => closer.closeAll());

      async function gateway(upstreams: GrpcGatewayOptions["upstreams"]): Promise<string> {
        const serverId = uniqueServerId("gw-tls");
        closer.add(
          await createGrpcGateway({ mqtt: mqttOptions(target), serverId, upstreams }),
          (g) => g.close(),
        );
        return serverId;
      }
      const testClient = (serverId: string) =>
        createClient(TestService, startTransport(closer, target, { serverId }));

      async function streamSizes(
        client: ReturnType<typeof testClient>,
        sizes: readonly number[],
      ): Promise<number[]> {
        const got: number[] = [];
        for await (const r of client.streamingOutputCall({
          responseParameters: sizes.map((size) => ({ size })),
        })) {
          got.push(r.payload?.body.byteLength ?? -1);
        }
        return got;
      }

      it("serves an https: upstream trusted by tls.ca, learned by reflection: unary and server streaming", async () => {
        const serverId = uniqueServerId("gw-tls");
        const gw = closer.add(
          await createGrpcGateway({
            mqtt: mqttOptions(target),
            serverId,
            upstreams: [{ url: serverAuth.url, tls: { ca } }],
          }),
          (g) => g.close(),
        );
        expect(gw.services()).toEqual([
          { service: TEST_SERVICE, upstream: serverAuth.url },
          { service: UNIMPLEMENTED_SERVICE, upstream: serverAuth.url },
        ]);
        expect(gw.upstreams()).toMatchObject([
          { url: serverAuth.url, source: "reflection", schema: true, connectivity: "ready" },
        ]);
        const client = testClient(serverId);
        const res = await client.unaryCall({
          responseSize: 7,
          payload: { body: new Uint8Array(3) },
        });
        expect(res.payload?.body.byteLength).toBe(7);
        expect(await streamSizes(client, [1, 2, 3, 4])).toEqual([1, 2, 3, 4]);
      });

      it("mutual TLS: with tls.cert and tls.key the upstream that requires them serves", async () => {
        const client = testClient(await gateway([{ url: mutual.url, tls: { ca, ...clientCert } }]));
        const res = await client.unaryCall({ responseSize: 5 });
        expect(res.payload?.body.byteLength).toBe(5);
        expect(await streamSizes(client, [10, 20])).toEqual([10, 20]);
      });

      it("mutual TLS without a client certificate: UNAVAILABLE naming the upstream, the other upstream still served", async () => {
        const serverId = await gateway([
          { url: mutual.url, tls: { ca }, services: [TEST_SERVICE] },
          { url: serverAuth.url, tls: { ca }, services: [UNIMPLEMENTED_SERVICE] },
        ]);
        const client = testClient(serverId);
        for (let attempt = 0; attempt < 2; attempt++) {
          const err = await failure(client.unaryCall({ responseSize: 1 }));
          expect(err.code, err.message).toBe(Code.Unavailable);
          expect(err.rawMessage).toContain(mutual.url);
          // Node's words for the server's TLS alert.
          expect(err.rawMessage).toMatch(/certificate required/);
        }
        const other = createClient(
          UnimplementedService,
          startTransport(closer, target, { serverId }),
        );
        expect((await other.unimplementedCall({})).$typeName).toBe("mqrpc.interop.v1.Empty");
      });

      it("a CA that did not sign the upstream's certificate: UNAVAILABLE naming the upstream", async () => {
        const strangerCa = readFileSync(stranger.caFile);
        const client = testClient(
          await gateway([
            { url: serverAuth.url, tls: { ca: strangerCa }, services: [TEST_SERVICE] },
          ]),
        );
        const err = await failure(client.unaryCall({ responseSize: 1 }));
        expect(err.code, err.message).toBe(Code.Unavailable);
        expect(err.rawMessage).toContain(serverAuth.url);
        expect(err.rawMessage).toMatch(/unable to verify|certificate/);
        const again = await failure(streamSizes(client, [1]));
        expect(again.code, again.message).toBe(Code.Unavailable);
        expect(again.rawMessage).toContain(serverAuth.url);
      });
    },
  );

  describe("gateway start", () => {
    it("fails within startTimeoutMs, naming the upstream, when reflection meets a CA that did not sign its certificate", async () => {
      const target = brokerTargets()[0];
      if (target === undefined) throw new Error("no broker target");
      const started = Date.now();
      const start = createGrpcGateway({
        mqtt: mqttOptions(target),
        serverId: uniqueServerId("gw-tls-ca"),
        upstreams: [{ url: serverAuth.url, tls: { ca: readFileSync(stranger.caFile) } }],
        startTimeoutMs: 500,
      });
      const closer = new Closer();
      const error = await start.then(
        async (g) => {
          closer.add(g, (x) => x.close());
          await closer.closeAll();
          throw new Error("the gateway started");
        },
        (e: unknown) => e as Error,
      );
      expect(error.message).toContain(`upstream ${serverAuth.url}`);
      // The default start timeout is 10 s: this one gave up after its 500 ms.
      expect(Date.now() - started).toBeLessThan(5_000);
    });
  });
});

describe("the tls option", () => {
  // Refused before the gateway connects anywhere: no broker listens here.
  const base = { mqtt: { url: "mqtt://127.0.0.1:1" }, serverId: uniqueServerId("gw-tls-options") };

  it("is refused for an http: upstream", async () => {
    await expect(
      createGrpcGateway({
        ...base,
        upstreams: [{ url: "http://127.0.0.1:50051", tls: { rejectUnauthorized: false } }],
      }),
    ).rejects.toThrow(
      /^upstreams\[0\]\.tls is for https: upstreams; url is http:\/\/127\.0\.0\.1:50051/,
    );
  });

  it("must be an object", async () => {
    await expect(
      createGrpcGateway({
        ...base,
        upstreams: [{ url: "https://127.0.0.1:50051", tls: "x" as never }],
      }),
    ).rejects.toThrow(/^upstreams\[0\]\.tls must be an object/);
  });

  it("replaces grpc-js's credentials and channelOptions, which are refused naming tls", async () => {
    for (const key of ["credentials", "channelOptions"]) {
      const upstream = { url: "https://127.0.0.1:50051", [key]: {} };
      await expect(
        createGrpcGateway({ ...base, upstreams: [upstream as { url: string }] }),
      ).rejects.toThrow(
        new RegExp(`^upstreams\\[0\\]\\.${key} is not an option.*TLS settings go in tls`),
      );
    }
  });

  it("names the upstream by its index", async () => {
    await expect(
      createGrpcGateway({
        ...base,
        upstreams: [{ url: "https://127.0.0.1:50051" }, { url: "unix:/tmp/x.sock", tls: {} }],
      }),
    ).rejects.toThrow(/^upstreams\[1\]\.tls is for https: upstreams/);
  });
});
