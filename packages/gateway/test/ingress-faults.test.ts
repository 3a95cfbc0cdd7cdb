/**
 * The ingress at its edges, through a real broker and gateway in front of
 * an in-process HTTP/2 upstream:
 *
 * - `close()` while a server stream runs (its response headers out): the
 *   client gets the status in trailers (UNAVAILABLE "the ingress is
 *   closing"), not a reset;
 * - JSON and Connect calls to a device that has no schema for the method
 *   (a gateway routing by service name only): UNIMPLEMENTED saying why,
 *   not a bare 404;
 * - 300 request headers reach the upstream;
 * - a response message over the ingress's `maxMessageBytes` is refused
 *   naming that option;
 * - keepalive: a client gone silent mid-call has the call cancelled at the
 *   upstream; a quiet call of a live client is pinged and completes.
 */
import * as http2 from "node:http2";
import { afterEach, describe, expect, it } from "vitest";
import { forBrokersWhere } from "../../../test/brokers/targets.js";
import { FaultProxy } from "../../../test/support/fault-proxy.js";
import { Closer, mqttOptions, uniqueServerId } from "../../../test/support/rpc-fixture.js";
import {
  createGrpcGateway,
  createGrpcIngress,
  type GrpcIngress,
  type GrpcIngressOptions,
} from "../src/index.js";
import { answerWith, envelope, fakeUpstream } from "./support/fake-upstream.js";

const SERVICE = "faults.v1.Svc";

/** What a raw HTTP/2 client saw of one call. */
interface Seen {
  readonly status: number | undefined;
  readonly headers: http2.IncomingHttpHeaders;
  readonly trailers: http2.IncomingHttpHeaders | undefined;
  readonly body: Buffer;
  readonly rstCode: number | undefined;
}

/**
 * Calls `path` on the ingress over HTTP/2 with `headers`, sending `body`;
 * `onData` runs at each response chunk. Resolves when the stream closes.
 */
function rawCall(
  closer: Closer,
  ingress: GrpcIngress,
  headers: http2.OutgoingHttpHeaders,
  body: Uint8Array,
  onData: () => void = () => {},
): Promise<Seen> {
  const session = closer.add(http2.connect(ingress.url), (s) => s.destroy());
  session.on("error", () => {});
  return new Promise((resolve) => {
    const stream = session.request({ ":method": "POST", ...headers });
    let response: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    stream.on("response", (h) => {
      response = h;
    });
    stream.on("trailers", (t) => {
      trailers = t;
    });
    stream.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      onData();
    });
    stream.on("error", () => {});
    stream.on("close", () =>
      resolve({
        status: response[":status"] === undefined ? undefined : Number(response[":status"]),
        headers: response,
        trailers,
        body: Buffer.concat(chunks),
        rstCode: stream.rstCode,
      }),
    );
    stream.end(body);
  });
}

forBrokersWhere(
  (t) => t.name === "aedes" || t.name === "mosquitto-5",
  (target) => {
    describe("ingress edges", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      /** A gateway for `upstreamUrl` (routing SERVICE by name, no schema) and an ingress. */
      async function path(upstreamUrl: string, ingressOptions: Partial<GrpcIngressOptions> = {}) {
        const serverId = uniqueServerId("ingress-faults");
        closer.add(
          await createGrpcGateway({
            mqtt: mqttOptions(target),
            serverId,
            upstreams: [{ url: upstreamUrl, services: [SERVICE] }],
          }),
          (g) => g.close(),
        );
        const ingress = closer.add(
          await createGrpcIngress({ mqtt: mqttOptions(target), ...ingressOptions }),
          (i) => i.close(),
        );
        return { serverId, ingress };
      }

      it("close() ends a running server stream with UNAVAILABLE in trailers", async () => {
        const upstream = await fakeUpstream(closer, (stream) => {
          stream.respond({ ":status": 200, "content-type": "application/grpc" });
          const tick = setInterval(() => stream.write(envelope(new Uint8Array([8, 1]))), 20);
          stream.once("close", () => clearInterval(tick));
        });
        const { serverId, ingress } = await path(upstream);
        let closing: Promise<void> | undefined;
        const seen = await rawCall(
          closer,
          ingress,
          {
            ":path": `/${SERVICE}/Stream`,
            "content-type": "application/grpc",
            te: "trailers",
            "mqrpc-server-id": serverId,
          },
          envelope(new Uint8Array([8, 1])),
          () => {
            closing ??= ingress.close();
          },
        );
        await closing;
        expect(seen.status).toBe(200);
        expect(seen.body.byteLength).toBeGreaterThan(0);
        expect(seen.trailers).toMatchObject({
          "grpc-status": "14",
          "grpc-message": "the ingress is closing",
        });
        expect(seen.rstCode).toBe(http2.constants.NGHTTP2_NO_ERROR);
      });

      it("JSON and Connect calls to a method the device does not describe are UNIMPLEMENTED, saying why", async () => {
        const upstream = await fakeUpstream(
          closer,
          answerWith({ "content-type": "application/grpc" }),
        );
        const { serverId, ingress } = await path(upstream);
        const why = `device ${serverId}: no schema for ${SERVICE}/M (the device does not describe it); JSON and Connect calls need the method's schema: give the ingress a descriptorSet, or call with binary gRPC`;

        const connect = await rawCall(
          closer,
          ingress,
          {
            ":path": `/${SERVICE}/M`,
            "content-type": "application/json",
            "mqrpc-server-id": serverId,
          },
          Buffer.from("{}"),
        );
        expect(connect.status).toBe(501);
        expect(JSON.parse(connect.body.toString())).toEqual({
          code: "unimplemented",
          message: why,
        });

        const grpcJson = await rawCall(
          closer,
          ingress,
          {
            ":path": `/${SERVICE}/M`,
            "content-type": "application/grpc+json",
            te: "trailers",
            "mqrpc-server-id": serverId,
          },
          envelope(Buffer.from("{}")),
        );
        expect(grpcJson.status).toBe(200);
        const status = { ...grpcJson.headers, ...grpcJson.trailers };
        expect(status["grpc-status"]).toBe("12");
        expect(decodeURIComponent(String(status["grpc-message"]))).toBe(why);
      });

      /** A server stream to `serverId` from a raw HTTP/2 client connected to `url`. */
      function openStream(url: string, serverId: string) {
        const session = closer.add(http2.connect(url), (s) => s.destroy());
        session.on("error", () => {});
        const stream = session.request({
          ":method": "POST",
          ":path": `/${SERVICE}/Stream`,
          "content-type": "application/grpc",
          te: "trailers",
          "mqrpc-server-id": serverId,
        });
        stream.on("error", () => {});
        stream.end(envelope(new Uint8Array([8, 1])));
        return { session, stream };
      }

      it("keepalive: a client gone silent mid-call has its call cancelled at the upstream", async () => {
        let running: () => void = () => {};
        const started = new Promise<void>((resolve) => {
          running = resolve;
        });
        let cancelled: () => void = () => {};
        const ended = new Promise<void>((resolve) => {
          cancelled = resolve;
        });
        const upstream = await fakeUpstream(closer, (stream) => {
          stream.once("close", () => cancelled());
          stream.respond({ ":status": 200, "content-type": "application/grpc" });
          stream.write(envelope(new Uint8Array([8, 1])));
          running();
          // Then nothing, for as long as the call is open.
        });
        const { serverId, ingress } = await path(upstream, {
          keepaliveTimeMs: 100,
          keepaliveTimeoutMs: 200,
        });
        const proxy = closer.add(await FaultProxy.start(ingress.url), (p) => p.close());
        const { session, stream } = openStream(`http://127.0.0.1:${proxy.port}`, serverId);
        await started;
        await new Promise((resolve) => stream.once("data", resolve));
        // The client's host goes silent: no FIN, no RST_STREAM, no PING ACK.
        proxy.stall();
        // Without keepalive this waits for ever (the call has no deadline).
        await ended;
        // When its network is back, the client learns its connection was
        // dropped (NO_ERROR: UNAVAILABLE to gRPC clients), not an internal error.
        const goaway = new Promise<number>((resolve) =>
          session.once("goaway", (code: number) => resolve(code)),
        );
        proxy.resume();
        expect(await goaway).toBe(http2.constants.NGHTTP2_NO_ERROR);
      });

      it("keepalive: a quiet call of a live client is pinged and completes", async () => {
        let answerAfterPings: () => void = () => {};
        const upstream = await fakeUpstream(closer, (stream) => {
          stream.respond(
            { ":status": 200, "content-type": "application/grpc" },
            { waitForTrailers: true },
          );
          stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
          stream.resume();
          // Answers once the ingress has pinged the client three times.
          let pings = 0;
          answerAfterPings = () => {
            if (++pings === 3) stream.end(envelope(new Uint8Array([8, 2])));
          };
        });
        const { serverId, ingress } = await path(upstream, {
          keepaliveTimeMs: 50,
          keepaliveTimeoutMs: 5_000,
        });
        const { session, stream } = openStream(ingress.url, serverId);
        session.on("ping", () => answerAfterPings());
        const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve) => {
          stream.on("trailers", resolve);
          stream.resume();
        });
        expect(trailers["grpc-status"]).toBe("0");
      });

      it("keepalive options are checked, naming them", async () => {
        for (const [options, message] of [
          [{ keepaliveTimeMs: 0 }, "keepaliveTimeMs option: 0 is not a positive integer"],
          [{ keepaliveTimeoutMs: 1.5 }, "keepaliveTimeoutMs option: 1.5 is not a positive integer"],
          [
            { keepaliveTimeMs: 2 ** 31 },
            "keepaliveTimeMs option: 2147483648 ms is longer than a timer waits (2147483647 ms)",
          ],
        ] as const) {
          await expect(
            createGrpcIngress({ mqtt: mqttOptions(target), ...options }),
          ).rejects.toThrow(message);
        }
      });

      it("a response message over the ingress's maxMessageBytes is RESOURCE_EXHAUSTED naming it", async () => {
        const upstream = await fakeUpstream(
          closer,
          answerWith({ "content-type": "application/grpc" }, envelope(new Uint8Array(2000))),
        );
        const call = (ingress: GrpcIngress, serverId: string) =>
          rawCall(
            closer,
            ingress,
            {
              ":path": `/${SERVICE}/M`,
              "content-type": "application/grpc",
              te: "trailers",
              "mqrpc-server-id": serverId,
            },
            envelope(new Uint8Array([8, 1])),
          );
        const own = await path(upstream, { maxMessageBytes: 1000 });
        const seen = await call(own.ingress, own.serverId);
        const status = { ...seen.headers, ...seen.trailers };
        expect(status["grpc-status"]).toBe("8");
        expect(decodeURIComponent(String(status["grpc-message"]))).toBe(
          "a message of 2000 bytes exceeds the ingress's maxMessageBytes (1000 bytes)",
        );
        // A transport limit of its own is named as such.
        const set = await path(upstream, { transport: { maxMessageBytes: 1000 } });
        const other = await call(set.ingress, set.serverId);
        expect(
          decodeURIComponent(String({ ...other.headers, ...other.trailers }["grpc-message"])),
        ).toBe("a message of 2000 bytes exceeds the transport's maxMessageBytes (1000 bytes)");
      });

      it("300 request headers reach the upstream", async () => {
        let received = 0;
        const upstream = await fakeUpstream(
          closer,
          (stream, headers) => {
            received = Object.keys(headers).filter((k) => k.startsWith("x-h")).length;
            answerWith({ "content-type": "application/grpc" })(stream);
          },
          { maxHeaderListPairs: 1000 },
        );
        const { serverId, ingress } = await path(upstream);
        const headers: http2.OutgoingHttpHeaders = {
          ":path": `/${SERVICE}/M`,
          "content-type": "application/grpc",
          te: "trailers",
          "mqrpc-server-id": serverId,
        };
        for (let i = 0; i < 300; i++) headers[`x-h${i}`] = `v${i}`;
        const seen = await rawCall(closer, ingress, headers, envelope(new Uint8Array([8, 1])));
        expect({ ...seen.headers, ...seen.trailers }["grpc-status"]).toBe("0");
        expect(received).toBe(300);
      });
    });
  },
);
