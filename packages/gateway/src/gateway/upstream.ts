/**
 * One upstream gRPC server and the HTTP/2 channel to it (`@grpc/grpc-js`),
 * and the forwarding of one mqrpc call as one upstream call.
 *
 * Every call goes upstream with identity serializers, as a bidi stream:
 * gRPC frames every method kind the same way, so the gateway needs no
 * schema to forward, and message bytes pass untouched (unknown fields
 * survive). A method known to be unary goes as a unary call, which costs
 * grpc-js less. grpc-js frames and deframes, applies the deadline
 * (`grpc-timeout`), cancels with RST_STREAM CANCEL, decompresses upstream
 * responses it can (gzip, deflate) and fails the call on those it cannot.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import {
  type ChannelCredentials,
  type ChannelOptions,
  Client,
  type ClientDuplexStream,
  connectivityState,
  status as grpcStatus,
  type Metadata,
  type StatusObject,
} from "@grpc/grpc-js";
import type { RawCallContext } from "@mqrpc/runtime";
import { decodeRpcStatus } from "./status-details.js";
import { appendMetadata, headersToMetadata } from "./upstream-metadata.js";
import { defaultCredentials, parseUpstreamUrl, type UpstreamAddress } from "./upstream-url.js";

/** grpc-js's connectivity states, by name. */
export type UpstreamConnectivity =
  | "idle"
  | "connecting"
  | "ready"
  | "transient_failure"
  | "shutdown";

const CONNECTIVITY_NAMES: Record<number, UpstreamConnectivity> = {
  [connectivityState.IDLE]: "idle",
  [connectivityState.CONNECTING]: "connecting",
  [connectivityState.READY]: "ready",
  [connectivityState.TRANSIENT_FAILURE]: "transient_failure",
  [connectivityState.SHUTDOWN]: "shutdown",
};

/** How the gateway reaches one upstream. */
export interface UpstreamChannelConfig {
  /** `http://host:port`, `https://host:port` or `unix:/path`. */
  readonly url: string;
  /** The option path for messages, e.g. `upstreams[0]`. */
  readonly option: string;
  readonly credentials?: ChannelCredentials;
  readonly channelOptions?: ChannelOptions;
  /** Largest upstream response message accepted, in bytes. */
  readonly maxMessageBytes: number;
}

/**
 * Statuses grpc-js makes up when an upstream resets or drops a stream
 * (rather than answering with a status of its own).
 */
const LOCAL_RESET =
  /^(Received RST_STREAM|Call cancelled$|Connection dropped$|Stream refused by server$|Write error|No connection established)/;

const serialize = (message: Uint8Array): Buffer =>
  Buffer.isBuffer(message)
    ? message
    : Buffer.from(message.buffer, message.byteOffset, message.byteLength);
const deserialize = (message: Buffer): Uint8Array => message;

/** The reason of a call's `over` signal: one object, not a DOMException per call. */
const CALL_OVER = new Error("the upstream call is over");

/** One upstream server: its grpc-js channel and call forwarding. */
export class Upstream {
  readonly url: string;
  readonly address: UpstreamAddress;
  readonly client: Client;
  private closed = false;

  constructor(config: UpstreamChannelConfig) {
    this.address = parseUpstreamUrl(config.url, `${config.option}.url`);
    this.url = config.url;
    this.client = new Client(
      this.address.target,
      config.credentials ?? defaultCredentials(this.address),
      {
        // Reconnect soon after an upstream restarts (grpc-js's defaults back off up to 120 s).
        "grpc.initial_reconnect_backoff_ms": 250,
        // grpc-js acknowledges writes at once while it keeps them for a retry
        // (up to 1 MiB a call): no retries, no retry buffer, so a write is
        // done only when the upstream's HTTP/2 stream takes it (flow control).
        "grpc.enable_retries": 0,
        "grpc.per_rpc_retry_buffer_size": 0,
        "grpc.max_reconnect_backoff_ms": 5_000,
        "grpc.max_receive_message_length": config.maxMessageBytes,
        "grpc.max_send_message_length": -1,
        ...config.channelOptions,
      },
    );
  }

  /** The channel's connectivity state now. */
  connectivity(): UpstreamConnectivity {
    if (this.closed) return "shutdown";
    return CONNECTIVITY_NAMES[this.client.getChannel().getConnectivityState(false)] ?? "idle";
  }

  /**
   * Keeps the channel connected and calls `onReconnect` each time it
   * becomes ready again after having been down (not for the first
   * connection). grpc-js reconnects with backoff; an idle channel (after a
   * drop, or grpc-js's idle timeout) is asked to connect at once.
   */
  watch(onReconnect: () => void): void {
    const channel = this.client.getChannel();
    let wasDown = false;
    let hasBeenReady = false;
    const step = () => {
      if (this.closed) return;
      const state = channel.getConnectivityState(true);
      if (state === connectivityState.READY) {
        if (wasDown && hasBeenReady) onReconnect();
        hasBeenReady = true;
        wasDown = false;
      } else if (state !== connectivityState.CONNECTING) {
        wasDown = true;
      }
      if (state === connectivityState.SHUTDOWN) return;
      try {
        channel.watchConnectivityState(state, Number.POSITIVE_INFINITY, step);
      } catch {
        // The channel was shut down in between (close()).
      }
    };
    step();
  }

  /**
   * Forwards one mqrpc call as the raw handler the server runs: requests
   * are read only as the upstream stream takes them (a `write()` that
   * returns false waits for `drain`), and an upstream response is read only
   * when the runtime asks for the next one (the grpc-js stream pauses its
   * HTTP/2 stream meanwhile), so flow control holds end to end.
   */
  async *forward(
    requests: AsyncIterable<Uint8Array>,
    context: RawCallContext,
  ): AsyncGenerator<Uint8Array, void, undefined> {
    context.signal.throwIfAborted();
    const metadata = headersToMetadata(context.requestHeader);
    const timeoutMs = context.timeoutMs();
    const call = this.client.makeBidiStreamRequest(
      `/${context.service}/${context.method}`,
      serialize,
      deserialize,
      metadata,
      timeoutMs === undefined ? {} : { deadline: Date.now() + Math.max(0, timeoutMs) },
    );
    let headersReceived = false;
    call.on("metadata", (header: Metadata) => {
      headersReceived = true;
      appendMetadata(header, context.responseHeader);
    });
    // The status event carries every outcome; errors are read from it.
    call.on("error", () => {});
    let status: StatusObject | undefined;
    const over = new AbortController();
    const ended = new Promise<StatusObject>((resolve) => {
      call.once("status", (s: StatusObject) => {
        status = s;
        over.abort(CALL_OVER);
        resolve(s);
      });
    });
    const cancel = () => call.cancel();
    context.signal.addEventListener("abort", cancel, { once: true });
    void sendRequests(requests, call, over.signal);
    try {
      try {
        for await (const message of call as AsyncIterable<Uint8Array>) yield message;
      } catch {
        // The status tells what happened.
      }
      const final = await ended;
      if (context.signal.aborted) throw context.signal.reason;
      appendMetadata(final.metadata, context.responseTrailer);
      if (final.code !== grpcStatus.OK) throw this.statusError(final, headersReceived);
    } finally {
      context.signal.removeEventListener("abort", cancel);
      if (status === undefined) call.cancel();
    }
  }

  /**
   * Forwards a call of a method known to be unary as a grpc-js unary call.
   * A caller that sent other than one request message is forwarded as a
   * stream, so that the upstream answers it as it would any client.
   */
  async *forwardUnary(
    requests: AsyncIterable<Uint8Array>,
    context: RawCallContext,
  ): AsyncGenerator<Uint8Array, void, undefined> {
    const received: Uint8Array[] = [];
    for await (const message of requests) received.push(message);
    const request = received[0];
    if (received.length !== 1 || request === undefined) {
      yield* this.forward(replay(received), context);
      return;
    }
    context.signal.throwIfAborted();
    const timeoutMs = context.timeoutMs();
    let response: Uint8Array | undefined;
    const call = this.client.makeUnaryRequest(
      `/${context.service}/${context.method}`,
      serialize,
      deserialize,
      request,
      headersToMetadata(context.requestHeader),
      timeoutMs === undefined ? {} : { deadline: Date.now() + Math.max(0, timeoutMs) },
      (_error, value) => {
        response = value;
      },
    );
    let headersReceived = false;
    call.on("metadata", (header: Metadata) => {
      headersReceived = true;
      appendMetadata(header, context.responseHeader);
    });
    let status: StatusObject | undefined;
    const ended = new Promise<StatusObject>((resolve) => {
      call.once("status", (s: StatusObject) => {
        status = s;
        resolve(s);
      });
    });
    const cancel = () => call.cancel();
    context.signal.addEventListener("abort", cancel, { once: true });
    try {
      const final = await ended;
      if (context.signal.aborted) throw context.signal.reason;
      appendMetadata(final.metadata, context.responseTrailer);
      if (final.code !== grpcStatus.OK) throw this.statusError(final, headersReceived);
      if (response !== undefined) yield response;
    } finally {
      context.signal.removeEventListener("abort", cancel);
      if (status === undefined) call.cancel();
    }
  }

  /** The ConnectError for an upstream's non-OK status, details included. */
  private statusError(final: StatusObject, headersReceived: boolean): ConnectError {
    let message = final.details;
    let code = final.code as number as Code;
    const detailsBin = final.metadata.get("grpc-status-details-bin")[0];
    const local =
      detailsBin === undefined &&
      ((!headersReceived && isEmpty(final.metadata)) || LOCAL_RESET.test(message));
    if (local) {
      // The upstream went away or reset the stream: say which one.
      message = `upstream ${this.url}: ${message}`;
      if (code === Code.Canceled) code = Code.Unavailable;
    }
    if (!(code in Code)) code = Code.Unknown;
    const error = new ConnectError(message, code);
    if (detailsBin !== undefined && typeof detailsBin !== "string") {
      try {
        error.details.push(...decodeRpcStatus(detailsBin).details);
      } catch {
        // A malformed grpc-status-details-bin: the code and message still tell the caller.
      }
    }
    return error;
  }

  /** Closes the channel; calls still running fail with UNAVAILABLE. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.close();
  }
}

function isEmpty(metadata: Metadata): boolean {
  return Object.keys(metadata.toJSON()).length === 0;
}

async function* replay(messages: readonly Uint8Array[]): AsyncGenerator<Uint8Array> {
  yield* messages;
}

/**
 * Writes the caller's requests to the upstream stream as it accepts them,
 * then half-closes it. Stops when the call is over first.
 */
async function sendRequests(
  requests: AsyncIterable<Uint8Array>,
  call: ClientDuplexStream<Uint8Array, Uint8Array>,
  over: AbortSignal,
): Promise<void> {
  try {
    for await (const message of requests) {
      if (over.aborted) return;
      if (!call.write(message)) await drained(call, over);
      if (over.aborted) return;
    }
    call.end();
  } catch {
    // The caller's stream failed (the call is ending): make sure the upstream knows.
    call.cancel();
  }
}

/** Resolves on the stream's `drain`, or when the call is over. */
function drained(
  call: ClientDuplexStream<Uint8Array, Uint8Array>,
  over: AbortSignal,
): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off("drain", done);
      over.removeEventListener("abort", done);
      resolve();
    };
    call.on("drain", done);
    over.addEventListener("abort", done);
  });
}
