/**
 * RequestMessages on a PassThrough standing for the HTTP request body:
 * messages cut out however the body is split, reading bounded while the
 * MQTT call does not ask, and each way a body can end.
 */
import { once } from "node:events";
import { PassThrough } from "node:stream";
import { gzipSync } from "node:zlib";
import { Code, ConnectError } from "@connectrpc/connect";
import { compressionGzip } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import {
  CLIENT_GONE,
  REQUEST_HIGH_WATER_BYTES,
  RequestMessages,
  type RequestMessagesOptions,
} from "./request-messages.js";

function envelope(flags: number, data: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + data.byteLength);
  out[0] = flags;
  out.writeUInt32BE(data.byteLength, 1);
  out.set(data, 5);
  return out;
}

function setup(options: Partial<RequestMessagesOptions> = {}) {
  const body = new PassThrough();
  const abort = new AbortController();
  const messages = new RequestMessages(body, {
    text: false,
    compression: null,
    maxBytes: 1024 * 1024,
    abort,
    ...options,
  });
  return { body, abort, messages, it: messages[Symbol.asyncIterator]() };
}

async function failure(promise: Promise<unknown>): Promise<ConnectError> {
  const e = await promise.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(ConnectError);
  return e as ConnectError;
}

describe("RequestMessages", () => {
  it("cuts messages out of a body split anywhere, then ends with the body", async () => {
    const { body, it: messages } = setup();
    const bytes = Buffer.concat([
      envelope(0, new Uint8Array([1, 2, 3])),
      envelope(0, new Uint8Array(0)),
      envelope(0, new Uint8Array([4])),
    ]);
    const first = messages.next();
    for (const b of bytes) body.write(Buffer.from([b]));
    body.end();
    expect([...((await first).value as Uint8Array)]).toEqual([1, 2, 3]);
    expect([...((await messages.next()).value as Uint8Array)]).toEqual([]);
    expect([...((await messages.next()).value as Uint8Array)]).toEqual([4]);
    expect((await messages.next()).done).toBe(true);
  });

  it("reads nothing before the first ask, and stops reading while enough waits unasked", async () => {
    const { body, it: messages } = setup();
    const message = new Uint8Array(1024);
    const count = (4 * REQUEST_HIGH_WATER_BYTES) / message.byteLength;
    for (let i = 0; i < count; i++) body.write(envelope(0, message));
    body.end();
    expect(body.readableFlowing).toBe(null);
    const paused = once(body, "pause");
    await messages.next();
    await paused;
    // The rest waits in the body (the HTTP/2 window), not in the reader.
    expect(body.readableLength + body.writableLength).toBeGreaterThan(2 * REQUEST_HIGH_WATER_BYTES);
    let taken = 1;
    while (!(await messages.next()).done) taken++;
    expect(taken).toBe(count);
  });

  it("a body that closes without its end cancels the call", async () => {
    const { body, abort, it: messages } = setup();
    const next = messages.next();
    body.write(envelope(0, new Uint8Array([1, 2])).subarray(0, 6));
    body.destroy();
    const e = await failure(next);
    expect(e.code).toBe(Code.Canceled);
    expect(e.rawMessage).toBe(CLIENT_GONE);
    expect(abort.signal.aborted).toBe(true);
  });

  it("a body that ends inside a message is INVALID_ARGUMENT, kept as the call's error", async () => {
    const { body, abort, messages, it: iterator } = setup();
    body.end(envelope(0, new Uint8Array([1, 2])).subarray(0, 6));
    const e = await failure(iterator.next());
    expect(e.code).toBe(Code.InvalidArgument);
    expect(messages.error?.code).toBe(Code.InvalidArgument);
    expect(abort.signal.reason).toBe(messages.error);
  });

  it("a message over maxBytes is RESOURCE_EXHAUSTED from its prefix alone", async () => {
    const { body, it: messages } = setup({ maxBytes: 10 });
    const next = messages.next();
    body.write(envelope(0, new Uint8Array(11)).subarray(0, 5));
    expect((await failure(next)).code).toBe(Code.ResourceExhausted);
  });

  it("decompresses gzip messages; a compressed one without an encoding is INTERNAL", async () => {
    const gzip = setup({ compression: compressionGzip });
    gzip.body.end(envelope(1, gzipSync(new Uint8Array([7, 8]))));
    expect([...((await gzip.it.next()).value as Uint8Array)]).toEqual([7, 8]);
    const plain = setup();
    plain.body.end(envelope(1, gzipSync(new Uint8Array([7, 8]))));
    expect((await failure(plain.it.next())).code).toBe(Code.Internal);
  });

  it("decodes a grpc-web-text body", async () => {
    const { body, it: messages } = setup({ text: true });
    const text = envelope(0, new Uint8Array([9, 9, 9])).toString("base64");
    body.write(text.slice(0, 3));
    body.end(text.slice(3));
    expect([...((await messages.next()).value as Uint8Array)]).toEqual([9, 9, 9]);
    expect((await messages.next()).done).toBe(true);
  });

  it("return() drops the rest of the body without holding it", async () => {
    const { body, it: messages } = setup();
    body.write(envelope(0, new Uint8Array([1])));
    await messages.next();
    await messages.return?.();
    const ended = once(body, "end");
    for (let i = 0; i < 100; i++) body.write(envelope(0, new Uint8Array(4096)));
    body.end();
    await ended;
  });
});
