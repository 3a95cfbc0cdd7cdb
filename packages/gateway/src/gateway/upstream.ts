/**
 * One upstream gRPC server: its HTTP/2 channel (upstream-channel.ts) and
 * the forwarding of one mqrpc call as one upstream call (upstream-call.ts).
 *
 * Every call goes upstream the same way, whatever its kind: gRPC frames
 * every method kind alike, so the gateway needs no schema to forward, and
 * message bytes pass untouched (unknown fields survive).
 */
import type { RawCallContext } from "@mqrpc/runtime";
import { callUpstream } from "./upstream-call.js";
import {
  UpstreamChannel,
  type UpstreamConnectivity,
  type UpstreamKeepalive,
  type UpstreamTlsOptions,
} from "./upstream-channel.js";
import { appendMetadata, metadataHeaders } from "./upstream-metadata.js";
import { parseUpstreamUrl } from "./upstream-url.js";

export type { UpstreamConnectivity, UpstreamTlsOptions };

/** How the gateway reaches one upstream. */
export interface UpstreamChannelConfig {
  /** `http://host:port`, `https://host:port` or `unix:/path`. */
  readonly url: string;
  /** The option path for messages, e.g. `upstreams[0]`. */
  readonly option: string;
  readonly tls?: UpstreamTlsOptions;
  /** Largest upstream response message accepted, in bytes. */
  readonly maxMessageBytes: number;
  /** How long a new connection has to answer HTTP/2, ms. */
  readonly connectTimeoutMs: number;
  /** HTTP/2 keepalive PINGs while calls are open; none when undefined. */
  readonly keepalive?: UpstreamKeepalive;
}

/** One upstream server: its channel and call forwarding. */
export class Upstream {
  readonly url: string;
  readonly channel: UpstreamChannel;
  private readonly maxMessageBytes: number;

  constructor(config: UpstreamChannelConfig) {
    this.url = config.url;
    this.channel = new UpstreamChannel(
      parseUpstreamUrl(config.url, `${config.option}.url`),
      config.tls,
      config.connectTimeoutMs,
      config.keepalive,
    );
    this.maxMessageBytes = config.maxMessageBytes;
  }

  /** The connection's state now. */
  connectivity(): UpstreamConnectivity {
    return this.channel.connectivity();
  }

  /**
   * Keeps the upstream connected, calls `onDown` when it is lost (with the
   * reason) and `onReconnect` each time it is back after having been down
   * (not for the first connection).
   */
  watch(onReconnect: () => void, onDown: (reason: string) => void): void {
    this.channel.watch(onReconnect, onDown);
  }

  /**
   * Forwards one mqrpc call as the raw handler the server runs: the
   * caller's remaining deadline goes as `grpc-timeout`, its metadata as
   * headers; the upstream's headers and trailers come back to the caller.
   * Requests are read only as the upstream stream takes them, and an
   * upstream response only when the runtime asks for the next one, so flow
   * control holds end to end.
   */
  async *forward(
    requests: AsyncIterable<Uint8Array>,
    context: RawCallContext,
  ): AsyncGenerator<Uint8Array, void, undefined> {
    context.signal.throwIfAborted();
    yield* callUpstream(this.channel, requests, {
      path: `/${context.service}/${context.method}`,
      metadata: metadataHeaders(context.requestHeader),
      timeoutMs: context.timeoutMs(),
      signal: context.signal,
      maxMessageBytes: this.maxMessageBytes,
      onHeaders: (headers) => appendMetadata(headers, () => context.responseHeader),
      onTrailers: (trailers) => appendMetadata(trailers, () => context.responseTrailer),
    });
  }

  /** Closes the channel; calls still running fail with UNAVAILABLE. */
  close(): void {
    this.channel.close();
  }
}
