/**
 * In-process HTTP/2 "upstreams" a test writes to misbehave one way or
 * another (the gateway's fault tests), and the gRPC framing they need.
 */
import * as http2 from "node:http2";
import type * as net from "node:net";
import type { Closer } from "../../../../test/support/rpc-fixture.js";

/** A gRPC message envelope around `bytes`. */
export function envelope(bytes: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + bytes.length);
  out.writeUInt32BE(bytes.length, 1);
  out.set(bytes, 5);
  return out;
}

/** An HTTP/2 server answering every stream with `answer`; closed by `closer`. */
export async function fakeUpstream(
  closer: Closer,
  answer: (
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    rawHeaders: string[],
  ) => void,
  options: http2.ServerOptions = {},
): Promise<string> {
  const server = http2.createServer(options);
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  server.on(
    "stream",
    (
      stream: http2.ServerHttp2Stream,
      headers: http2.IncomingHttpHeaders,
      _flags: number,
      rawHeaders: string[],
    ) => {
      stream.on("error", () => {});
      answer(stream, headers, rawHeaders);
    },
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closer.add(server, (s) => {
    for (const session of sessions) session.destroy();
    return new Promise((resolve) => s.close(resolve));
  });
  return `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}

/** Reads the request, then answers 200 with `headers`, one message and OK trailers. */
export function answerWith(
  headers: http2.OutgoingHttpHeaders,
  body = envelope(new Uint8Array([8, 1])),
) {
  return (stream: http2.ServerHttp2Stream) => {
    stream.resume();
    stream.once("end", () => {
      stream.respond({ ":status": 200, ...headers }, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(body);
    });
  };
}
