/**
 * Upstreams that misbehave at the HTTP/2 level, each an in-process
 * `node:http2` (or TCP) server written to fail one way, called through a
 * real gateway and broker:
 *
 * - a port that accepts TCP and never speaks HTTP/2: calls without a
 *   deadline end UNAVAILABLE after `upstreamConnectTimeoutMs`;
 * - a 200 response that is not gRPC (text/html, application/json): UNKNOWN
 *   naming the content-type, not its bytes read as messages; a
 *   trailers-only answer without a body still counts;
 * - many metadata entries: 300 response headers reach the caller; an
 *   upstream that refuses the request's headers (ENHANCE_YOUR_CALM)
 *   gives RESOURCE_EXHAUSTED;
 * - deadlines: a call past its deadline is left to the upstream (told it by
 *   `grpc-timeout`) to end, and reset only if it is still open a grace
 *   later.
 */
import * as http2 from "node:http2";
import { constants as http2constants } from "node:http2";
import * as net from "node:net";
import { Code, ConnectError, decodeBinaryHeader } from "@connectrpc/connect";
import type { MqttTransport } from "@mqrpc/runtime";
import { afterEach, describe, expect, it } from "vitest";
import { forBrokersWhere } from "../../../test/brokers/targets.js";
import { FaultProxy } from "../../../test/support/fault-proxy.js";
import {
  Closer,
  deferred,
  mqttOptions,
  startTransport,
  uniqueServerId,
} from "../../../test/support/rpc-fixture.js";
import { createGrpcGateway, type GrpcGatewayOptions } from "../src/index.js";
import { answerWith, envelope, fakeUpstream as upstream } from "./support/fake-upstream.js";

const SERVICE = "faults.v1.Svc";

/** One unary-shaped raw call (a bidi stream of one message): its messages and response header, or its error. */
async function callOnce(
  transport: MqttTransport,
  header?: HeadersInit,
  timeoutMs?: number,
): Promise<{ messages: number; header: Headers } | ConnectError> {
  try {
    const response = await transport.rawStream({
      service: SERVICE,
      method: "M",
      ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      message: (async function* () {
        yield new Uint8Array([8, 1]);
      })(),
      ...(header !== undefined ? { header } : {}),
    });
    let messages = 0;
    for await (const _ of response.message) messages++;
    return { messages, header: response.header };
  } catch (e) {
    return ConnectError.from(e);
  }
}

forBrokersWhere(
  (t) => t.name === "aedes" || t.name === "mosquitto-5",
  (target) => {
    describe("misbehaving upstreams", () => {
      const closer = new Closer();
      afterEach(() => closer.closeAll());

      /** A gateway in front of `url` and a transport calling it. */
      async function through(
        url: string,
        options: Partial<GrpcGatewayOptions> = {},
      ): Promise<MqttTransport> {
        const serverId = uniqueServerId("faults");
        closer.add(
          await createGrpcGateway({
            mqtt: mqttOptions(target),
            serverId,
            upstreams: [{ url, services: [SERVICE] }],
            ...options,
          }),
          (g) => g.close(),
        );
        return startTransport(closer, target, { serverId });
      }

      it("a port that never speaks HTTP/2 fails calls without a deadline with UNAVAILABLE", async () => {
        const silent = net.createServer((socket) => {
          socket.on("error", () => {});
        });
        const sockets = new Set<net.Socket>();
        silent.on("connection", (socket) => sockets.add(socket));
        await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
        closer.add(silent, (s) => {
          for (const socket of sockets) socket.destroy();
          return new Promise((resolve) => s.close(resolve));
        });
        const url = `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
        const transport = await through(url, { upstreamConnectTimeoutMs: 300 });
        const outcome = await callOnce(transport);
        expect(outcome).toBeInstanceOf(ConnectError);
        expect((outcome as ConnectError).code).toBe(Code.Unavailable);
        expect((outcome as ConnectError).rawMessage).toBe(
          `upstream ${url}: no HTTP/2 answer within 300 ms of connecting: is a gRPC server listening there?`,
        );
      });

      /**
       * An upstream whose calls never answer, but end by themselves
       * (DEADLINE_EXCEEDED in trailers) `lateMs` after their `grpc-timeout`
       * when `lateMs` is given; resolves each call's stream once it closed,
       * with how (`rstCode`: NGHTTP2_CANCEL when the gateway reset it).
       */
      async function deadlineUpstream(lateMs: number | undefined) {
        const closed = deferred<{ rstCode: number | undefined }>();
        const url = await upstream(closer, (stream, headers) => {
          stream.on("error", () => {});
          stream.once("close", () => closed.resolve({ rstCode: stream.rstCode }));
          stream.respond(
            { ":status": 200, "content-type": "application/grpc" },
            { waitForTrailers: true },
          );
          stream.resume();
          if (lateMs === undefined) return;
          const timeout = Number.parseInt(String(headers["grpc-timeout"]), 10);
          stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "4" }));
          setTimeout(() => stream.end(), timeout + lateMs);
        });
        return { url, closed: closed.promise };
      }

      it("deadline: a call past it is left to the upstream that was told it, with no reset", async () => {
        // The upstream ends the call 200 ms after the deadline, within the
        // gateway's grace: resetting it meanwhile raced the upstream's own
        // end (which crashed Node's HTTP/2 in storms).
        const { url, closed } = await deadlineUpstream(200);
        const transport = await through(url);
        const outcome = await callOnce(transport, undefined, 300);
        expect(outcome).toBeInstanceOf(ConnectError);
        expect((outcome as ConnectError).code).toBe(Code.DeadlineExceeded);
        expect((await closed).rstCode).toBe(http2constants.NGHTTP2_NO_ERROR);
      });

      it("deadline: a call the upstream does not end is reset once the grace is over", async () => {
        const { url, closed } = await deadlineUpstream(undefined);
        const transport = await through(url);
        const outcome = await callOnce(transport, undefined, 300);
        expect((outcome as ConnectError).code).toBe(Code.DeadlineExceeded);
        expect((await closed).rstCode).toBe(http2constants.NGHTTP2_CANCEL);
      });

      it("keepalive: an upstream that goes silent mid-call fails it UNAVAILABLE; the next call works", async () => {
        let arrived: () => void = () => {};
        const first = new Promise<void>((resolve) => {
          arrived = resolve;
        });
        let calls = 0;
        const direct = await upstream(closer, (stream) => {
          calls++;
          // The first call is held: its upstream then goes silent.
          if (calls === 1) {
            stream.resume();
            arrived();
            return;
          }
          answerWith({ "content-type": "application/grpc" })(stream);
        });
        const proxy = await FaultProxy.start(direct);
        closer.add(proxy, (p) => p.close());
        const url = `http://127.0.0.1:${proxy.port}`;
        const transport = await through(url, {
          upstreamKeepaliveTimeMs: 100,
          upstreamKeepaliveTimeoutMs: 200,
        });
        const held = callOnce(transport);
        await first;
        proxy.stall();
        const outcome = await held;
        expect(outcome).toBeInstanceOf(ConnectError);
        expect((outcome as ConnectError).code).toBe(Code.Unavailable);
        expect((outcome as ConnectError).rawMessage).toBe(
          `upstream ${url}: no answer to a keepalive PING within 200 ms: the connection is lost`,
        );
        proxy.resume();
        expect(await callOnce(transport)).toMatchObject({ messages: 1 });
      });

      it("keepalive: a quiet call on a live upstream is pinged and completes", async () => {
        const direct = await upstream(closer, (stream) => {
          // Answers after the gateway's third PING on this connection.
          let pings = 0;
          const onPing = () => {
            if (++pings < 3) return;
            stream.session?.off("ping", onPing);
            answerWith({ "content-type": "application/grpc" })(stream);
          };
          stream.session?.on("ping", onPing);
        });
        const transport = await through(direct, {
          upstreamKeepaliveTimeMs: 50,
          upstreamKeepaliveTimeoutMs: 5_000,
        });
        expect(await callOnce(transport)).toMatchObject({ messages: 1 });
      });

      it("keepalive: a time below gRPC clients' 10 s minimum is taken, with a warning at start", async () => {
        const direct = await upstream(closer, answerWith({ "content-type": "application/grpc" }));
        const warnings = (upstreamKeepaliveTimeMs: number) => {
          const said: string[] = [];
          const logger = { warn: (m: string) => said.push(m) };
          return { said, options: { upstreamKeepaliveTimeMs, logger } };
        };
        const low = warnings(50);
        expect(await callOnce(await through(direct, low.options))).toMatchObject({ messages: 1 });
        expect(low.said.filter((m) => m.includes("upstreamKeepaliveTimeMs"))).toEqual([
          "gateway: upstreamKeepaliveTimeMs is 50 ms, below the 10 s gRPC clients use at least; gRPC servers in C-core (Python, C++), Go and Java permit one PING per 5 min unless configured and answer more with a GOAWAY too_many_pings, which fails the calls on the connection",
        ]);
        const enough = warnings(10_000);
        await through(direct, enough.options);
        expect(enough.said.filter((m) => m.includes("upstreamKeepaliveTimeMs"))).toEqual([]);
      });

      it("keepalive: an upstream that refuses the PINGs (GOAWAY too_many_pings) gives a message that says to raise the time", async () => {
        const direct = await upstream(closer, (stream) => {
          // As gRPC servers do on a third PING within their permitted interval.
          let pings = 0;
          stream.session?.on("ping", () => {
            if (++pings < 3) return;
            const session = stream.session;
            session?.goaway(
              http2constants.NGHTTP2_ENHANCE_YOUR_CALM,
              stream.id ?? 0,
              Buffer.from("too_many_pings"),
            );
            session?.destroy();
          });
        });
        const transport = await through(direct, { upstreamKeepaliveTimeMs: 50 });
        const outcome = await callOnce(transport);
        expect(outcome).toBeInstanceOf(ConnectError);
        expect((outcome as ConnectError).code).toBe(Code.Unavailable);
        expect((outcome as ConnectError).rawMessage).toBe(
          `upstream ${direct}: the upstream closed the connection for keepalive PINGs more frequent than it permits (GOAWAY ENHANCE_YOUR_CALM too_many_pings); set upstreamKeepaliveTimeMs at or above its permitted interval (gRPC servers: 5 min unless configured)`,
        );
      });

      it("repeated -bin metadata travels as repeated fields both ways", async () => {
        let requestFields: string[] = [];
        const direct = await upstream(closer, (stream, _headers, rawHeaders) => {
          requestFields = [];
          for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
            if (rawHeaders[i] === "x-req-bin") requestFields.push(rawHeaders[i + 1] as string);
          }
          stream.resume();
          stream.once("end", () => {
            stream.respond(
              { ":status": 200, "content-type": "application/grpc", "x-h-bin": ["AA==", "AQI="] },
              { waitForTrailers: true },
            );
            stream.once("wantTrailers", () =>
              stream.sendTrailers({ "grpc-status": "0", "x-t-bin": ["AQI=", "AA=="] }),
            );
            stream.end(envelope(new Uint8Array([8, 1])));
          });
        });
        const transport = await through(direct);
        const header = new Headers();
        header.append("x-req-bin", "AA==");
        header.append("x-req-bin", "AQI=");
        const response = await transport.rawStream({
          service: SERVICE,
          method: "M",
          header,
          message: (async function* () {
            yield new Uint8Array([8, 1]);
          })(),
        });
        for await (const _ of response.message) {
          // Drained.
        }
        /** Each base64 value decoded. */
        const bytes = (values: string[]) => values.map((v) => [...decodeBinaryHeader(v.trim())]);
        expect(bytes(requestFields)).toEqual([[0], [1, 2]]);
        expect(bytes(response.header.get("x-h-bin")?.split(",") ?? [])).toEqual([[0], [1, 2]]);
        expect(bytes(response.trailer.get("x-t-bin")?.split(",") ?? [])).toEqual([[1, 2], [0]]);
      });

      it("a logger that throws does not take the gateway down when an upstream goes away", async () => {
        const sockets = new Set<net.Socket>();
        const server = http2.createServer();
        server.on("connection", (socket: net.Socket) => sockets.add(socket));
        server.on("stream", (stream) => answerWith({ "content-type": "application/grpc" })(stream));
        await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
        const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
        const warned = deferred<string>();
        const transport = await through(url, {
          logger: {
            warn: (message) => {
              warned.resolve(message);
              throw new Error("the logger is broken");
            },
          },
        });
        expect(await callOnce(transport)).toMatchObject({ messages: 1 });
        // The upstream goes away for good: the gateway warns (and the logger throws).
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          for (const socket of sockets) socket.destroy();
        });
        expect(await warned.promise).toMatch(
          /^gateway: upstream http:\/\/127\.0\.0\.1:\d+ is unreachable/,
        );
        const outcome = await callOnce(transport);
        expect((outcome as ConnectError).code).toBe(Code.Unavailable);
      });

      it("refuses bad keepalive options, naming them", async () => {
        const bad: Array<[Partial<GrpcGatewayOptions>, string]> = [
          [
            { upstreamKeepaliveTimeMs: 0 },
            "upstreamKeepaliveTimeMs must be a positive number of ms up to 2147483647, not 0",
          ],
          [
            { upstreamKeepaliveTimeMs: 1_000, upstreamKeepaliveTimeoutMs: Number.NaN },
            "upstreamKeepaliveTimeoutMs must be a positive number of ms up to 2147483647, not NaN",
          ],
          [
            { upstreamKeepaliveTimeoutMs: 1_000 },
            "upstreamKeepaliveTimeoutMs needs upstreamKeepaliveTimeMs: keepalive PINGs are off without it",
          ],
        ];
        for (const [options, message] of bad) {
          await expect(
            createGrpcGateway({
              mqtt: mqttOptions(target),
              serverId: uniqueServerId("faults"),
              upstreams: [{ url: "http://127.0.0.1:1", services: [SERVICE] }],
              ...options,
            }),
          ).rejects.toThrow(message);
        }
      });

      it("refuses an upstreamConnectTimeoutMs that is not a positive number of ms", async () => {
        for (const value of [0, -1, Number.NaN, 2 ** 31]) {
          await expect(
            createGrpcGateway({
              mqtt: mqttOptions(target),
              serverId: uniqueServerId("faults"),
              upstreams: [{ url: "http://127.0.0.1:1", services: [SERVICE] }],
              upstreamConnectTimeoutMs: value,
            }),
          ).rejects.toThrow(
            `upstreamConnectTimeoutMs must be a positive number of ms up to 2147483647, not ${value}`,
          );
        }
      });

      it("a 200 response that is not gRPC is UNKNOWN naming its content-type", async () => {
        const html = await upstream(
          closer,
          answerWith({ "content-type": "text/html" }, Buffer.from("<html>hello</html>")),
        );
        const json = await upstream(closer, answerWith({ "content-type": "application/json" }));
        const none = await upstream(closer, answerWith({}));
        for (const [url, shown] of [
          [html, 'content-type "text/html"'],
          [json, 'content-type "application/json"'],
          [none, "no content-type"],
        ] as const) {
          const outcome = await callOnce(await through(url));
          expect(outcome).toBeInstanceOf(ConnectError);
          expect((outcome as ConnectError).code).toBe(Code.Unknown);
          expect((outcome as ConnectError).rawMessage).toBe(
            `upstream ${url} answered with ${shown}, not a gRPC response (application/grpc)`,
          );
        }
      });

      it("gRPC content-types with a suffix or parameters pass, and so does a trailers-only status", async () => {
        const proto = await upstream(
          closer,
          answerWith({ "content-type": "application/grpc+proto" }),
        );
        expect(await callOnce(await through(proto))).toMatchObject({ messages: 1 });
        const trailersOnly = await upstream(closer, (stream) => {
          stream.resume();
          stream.respond(
            { ":status": 200, "grpc-status": "5", "grpc-message": "no such thing" },
            { endStream: true },
          );
        });
        const outcome = await callOnce(await through(trailersOnly));
        expect(outcome).toBeInstanceOf(ConnectError);
        expect((outcome as ConnectError).code).toBe(Code.NotFound);
        expect((outcome as ConnectError).rawMessage).toBe("no such thing");
      });

      it("300 response headers reach the caller", async () => {
        const many: http2.OutgoingHttpHeaders = { "content-type": "application/grpc" };
        for (let i = 0; i < 300; i++) many[`x-h${i}`] = `v${i}`;
        const url = await upstream(closer, answerWith(many));
        const outcome = await callOnce(await through(url));
        expect(outcome).not.toBeInstanceOf(ConnectError);
        const header = (outcome as { header: Headers }).header;
        let count = 0;
        header.forEach((_, key) => {
          if (key.startsWith("x-h")) count++;
        });
        expect(count).toBe(300);
        expect(header.get("x-h299")).toBe("v299");
      });

      it("an upstream that refuses the request's headers (ENHANCE_YOUR_CALM) gives RESOURCE_EXHAUSTED", async () => {
        // Node's default limit: 128 header fields.
        const url = await upstream(closer, answerWith({ "content-type": "application/grpc" }));
        const header: Record<string, string> = {};
        for (let i = 0; i < 300; i++) header[`x-h${i}`] = `v${i}`;
        const outcome = await callOnce(await through(url), header);
        expect(outcome).toBeInstanceOf(ConnectError);
        expect((outcome as ConnectError).code).toBe(Code.ResourceExhausted);
        expect((outcome as ConnectError).rawMessage).toBe(
          `upstream ${url}: the call was reset with ENHANCE_YOUR_CALM (HTTP/2 error 11): more load than one side accepts, e.g. more or larger headers`,
        );
        // With a limit that takes them, they all arrive.
        let received = 0;
        const roomy = await upstream(
          closer,
          (stream, headers) => {
            received = Object.keys(headers).filter((k) => k.startsWith("x-h")).length;
            answerWith({ "content-type": "application/grpc" })(stream);
          },
          { maxHeaderListPairs: 1000 },
        );
        expect(await callOnce(await through(roomy), header)).toMatchObject({ messages: 1 });
        expect(received).toBe(300);
      });
    });
  },
);
