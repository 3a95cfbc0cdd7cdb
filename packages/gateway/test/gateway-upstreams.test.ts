/**
 * Several upstreams behind one server id, and upstreams that come and go:
 * a Python server on a unix socket and grpc-js servers on TCP combined; a
 * service offered twice refused at start; an upstream killed mid-call
 * (the caller gets a status naming it, the gateway serves on); the
 * upstream restarted (the next call works, its services learned again);
 * an upstream that compresses its responses; option errors.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../../test/brokers/free-port.js";
import { brokerTargets, forBrokersWhere } from "../../../test/brokers/targets.js";
import { TestService, UnimplementedService } from "../../../test/gen/mqrpc/interop/v1/test_pb.js";
import { FileLevelService } from "../../../test/gen/mqrpc/test/v1/settings_pb.js";
import {
  Closer,
  mqttOptions,
  startTransport,
  uniqueServerId,
} from "../../../test/support/rpc-fixture.js";
import { createGrpcGateway, type GrpcGateway } from "../src/index.js";
import {
  buildInteropImage,
  type InteropImage,
  UpstreamProcess,
} from "./support/upstream-process.js";

const TEST_SERVICE = "mqrpc.interop.v1.TestService";
const TICKS_SERVICE = "mqrpc.test.v1.FileLevelService";

let image: InteropImage;
let python: UpstreamProcess;
let twin: UpstreamProcess;

beforeAll(async () => {
  image = await buildInteropImage();
  [python, twin] = await Promise.all([
    UpstreamProcess.python(image, `unix:${image.dir}/python.sock`),
    UpstreamProcess.grpcJs({ listen: "127.0.0.1:0", services: ["TestService"] }),
  ]);
});
afterAll(async () => {
  await python?.kill();
  await twin?.kill();
  await image?.remove();
});

forBrokersWhere(
  (t) => t.name === "aedes" || t.name === "mosquitto-5",
  (target) => {
    describe("combined upstreams that come and go", () => {
      const closer = new Closer();
      let port: number;
      let ticks: UpstreamProcess;
      let serverId: string;
      let gateway: GrpcGateway;
      let testClient: ReturnType<typeof createClient<typeof TestService>>;
      let ticksClient: ReturnType<typeof createClient<typeof FileLevelService>>;
      /** What the gateway logged, each line `warn …` or `info …`. */
      const logged: string[] = [];

      beforeAll(async () => {
        port = await freePort();
        ticks = await UpstreamProcess.grpcJs({
          listen: `127.0.0.1:${port}`,
          services: ["FileLevelService"],
        });
        serverId = uniqueServerId("gw-combined");
        gateway = closer.add(
          await createGrpcGateway({
            mqtt: mqttOptions(target),
            serverId,
            upstreams: [
              { url: python.url, descriptorSet: image.path, services: [TEST_SERVICE] },
              { url: ticks.url },
            ],
            logger: {
              warn: (message) => logged.push(`warn ${message}`),
              info: (message) => logged.push(`info ${message}`),
            },
          }),
          (g) => g.close(),
        );
        const transport = startTransport(closer, target, { serverId });
        testClient = createClient(TestService, transport);
        ticksClient = createClient(FileLevelService, transport);
      });
      afterAll(async () => {
        await closer.closeAll();
        await ticks?.kill();
      });

      async function tickCount(count: number): Promise<number[]> {
        const got: number[] = [];
        for await (const t of ticksClient.ticks({ count })) got.push(t.n);
        return got;
      }

      it("routes each service to its upstream: Python on a unix socket, grpc-js on TCP", async () => {
        expect(python.url).toMatch(/^unix:\//);
        expect(gateway.services()).toEqual([
          { service: TEST_SERVICE, upstream: python.url },
          { service: TICKS_SERVICE, upstream: ticks.url },
        ]);
        const res = await testClient.unaryCall({
          responseSize: 5,
          payload: { body: new Uint8Array(3) },
        });
        expect(res.payload?.body.byteLength).toBe(5);
        expect(await tickCount(5)).toEqual([1, 2, 3, 4, 5]);
      });

      it("an upstream killed mid-call: the caller gets UNAVAILABLE naming it, other calls go on", async () => {
        const got: number[] = [];
        const err = await (async () => {
          for await (const t of ticksClient.ticks({ count: 1_000_000 })) {
            got.push(t.n);
            if (got.length === 3) await ticks.kill();
          }
        })().catch((e: unknown) => ConnectError.from(e));
        expect(err).toBeInstanceOf(ConnectError);
        expect((err as ConnectError).code).toBe(Code.Unavailable);
        expect((err as ConnectError).rawMessage).toContain(ticks.url);
        expect(got.slice(0, 3)).toEqual([1, 2, 3]);

        // The other upstream is served as before.
        expect((await testClient.emptyCall({})).$typeName).toBe("mqrpc.interop.v1.Empty");
        // Calls to the dead one fail with UNAVAILABLE naming it.
        const down = await tickCount(1).catch((e: unknown) => ConnectError.from(e));
        expect((down as ConnectError).code).toBe(Code.Unavailable);
        expect((down as ConnectError).rawMessage).toContain(ticks.url);
        // The gateway says so once, naming the upstream and the cause.
        await expect
          .poll(() => logged.filter((l) => l.includes(`upstream ${ticks.url} is unreachable`)), {
            timeout: 10_000,
            interval: 50,
          })
          .toEqual([expect.stringMatching(/^warn .*ECONNREFUSED.*reconnecting$/)]);
      });

      it("the upstream restarted: the next call works and its services are learned again", async () => {
        // Back on the same port, now offering one service more.
        ticks = await UpstreamProcess.grpcJs({
          listen: `127.0.0.1:${port}`,
          services: ["FileLevelService", "UnimplementedService"],
        });
        await expect
          .poll(() => gateway.services().map((r) => r.service), { timeout: 20_000, interval: 50 })
          .toContain("mqrpc.interop.v1.UnimplementedService");
        expect(await tickCount(3)).toEqual([1, 2, 3]);
        const other = createClient(
          UnimplementedService,
          startTransport(closer, target, { serverId }),
        );
        expect((await other.unimplementedCall({})).$typeName).toBe("mqrpc.interop.v1.Empty");
        expect(gateway.upstreams()[1]).toMatchObject({ url: ticks.url, connectivity: "ready" });
        await expect
          .poll(() => logged.filter((l) => l.startsWith("info ")), {
            timeout: 10_000,
            interval: 50,
          })
          .toEqual([`info gateway: upstream ${ticks.url} is reachable again`]);
      });
    });
  },
);

describe("gateway start", () => {
  const target = brokerTargets()[0];
  const closer = new Closer();
  afterAll(() => closer.closeAll());

  it("refuses a service offered by two upstreams, naming both", async () => {
    if (target === undefined) throw new Error("no broker target");
    const start = createGrpcGateway({
      mqtt: mqttOptions(target),
      serverId: uniqueServerId("gw-dup"),
      upstreams: [{ url: python.url, descriptorSet: image.path }, { url: twin.url }],
    });
    const error = await start.then(
      (g) => closer.add(g, (x) => x.close()),
      (e: unknown) => e as Error,
    );
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toContain(TEST_SERVICE);
    expect((error as Error).message).toContain(python.url);
    expect((error as Error).message).toContain(twin.url);
  });

  it("an upstream that compresses its responses (gzip): the caller gets them whole", async () => {
    if (target === undefined) throw new Error("no broker target");
    const gzip = await UpstreamProcess.python(image, "127.0.0.1:0", { gzip: true });
    closer.add(gzip, (g) => g.kill());
    const serverId = uniqueServerId("gw-gzip");
    closer.add(
      await createGrpcGateway({
        mqtt: mqttOptions(target),
        serverId,
        upstreams: [{ url: gzip.url, descriptorSet: image.path, services: [TEST_SERVICE] }],
      }),
      (g) => g.close(),
    );
    const client = createClient(TestService, startTransport(closer, target, { serverId }));
    const res = await client.unaryCall({
      responseSize: 100_000,
      payload: { body: new Uint8Array(10) },
    });
    expect(res.payload?.body.byteLength).toBe(100_000);
    expect(res.payload?.body.every((b) => b === 0)).toBe(true);
  });

  it("names the upstream whose reflection fails within startTimeoutMs", async () => {
    if (target === undefined) throw new Error("no broker target");
    const nobody = `http://127.0.0.1:${await freePort()}`;
    await expect(
      createGrpcGateway({
        mqtt: mqttOptions(target),
        serverId: uniqueServerId("gw-down"),
        upstreams: [{ url: nobody }],
        startTimeoutMs: 300,
      }),
    ).rejects.toThrow(nobody);
  });

  it("says what to give instead when the upstream serves no reflection (grpcio's default)", async () => {
    if (target === undefined) throw new Error("no broker target");
    await expect(
      createGrpcGateway({
        mqtt: mqttOptions(target),
        serverId: uniqueServerId("gw-no-reflection"),
        upstreams: [{ url: python.url }],
      }),
    ).rejects.toThrow(
      /serves no gRPC server reflection: name its services in "services", give its schema as "descriptorSet"/,
    );
  });

  it("names the option for bad upstream options", async () => {
    if (target === undefined) throw new Error("no broker target");
    const base = { mqtt: mqttOptions(target), serverId: uniqueServerId("gw-options") };
    await expect(createGrpcGateway({ ...base, upstreams: [] })).rejects.toThrow(/upstreams/);
    await expect(createGrpcGateway({ ...base, upstreams: [{ url: "ftp://x:1" }] })).rejects.toThrow(
      /upstreams\[0\]\.url/,
    );
    await expect(
      createGrpcGateway({ ...base, upstreams: [{ url: "http://127.0.0.1" }] }),
    ).rejects.toThrow(/upstreams\[0\]\.url.*port/);
    await expect(
      createGrpcGateway({
        ...base,
        upstreams: [{ url: python.url, descriptorSet: `${image.dir}/missing.binpb` }],
      }),
    ).rejects.toThrow(/upstreams\[0\]\.descriptorSet/);
    await expect(
      createGrpcGateway({
        ...base,
        upstreams: [{ url: python.url, descriptorSet: image.path, services: ["acme.v1.Nope"] }],
      }),
    ).rejects.toThrow(/upstreams\[0\]\.services: acme\.v1\.Nope/);
  });
});
