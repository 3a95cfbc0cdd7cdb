/**
 * Calls by method name with serialized messages, for callers without the
 * method's schema (a gRPC ingress forwarding bytes): grpc-js's
 * `makeBidiStreamRequest` with identity serializers, over MQTT.
 */
import type { MethodSettings } from "../method-settings.js";
import type { MethodKind } from "../server/raw-method.js";

/** One call made with {@link MqttTransport.rawStream}. */
export interface RawStreamRequest {
  /** Fully qualified service name, e.g. `acme.power.v1.PowerService`. */
  readonly service: string;
  /** Method name as in the proto, e.g. `SetLed`. */
  readonly method: string;
  /**
   * The method's kind when known. `unary` and `server_streaming` send their
   * one request inside the Open frame (one publish fewer); without it every
   * call travels as a bidi stream, which carries every kind correctly.
   */
  readonly kind?: MethodKind;
  /** Request messages (protobuf binary), read as flow-control credit allows; their end is the half-close. */
  readonly message: AsyncIterable<Uint8Array>;
  /** Request metadata; `-bin` keys base64 as in Connect. */
  readonly header?: HeadersInit;
  /** The call's deadline, in ms from now. */
  readonly timeoutMs?: number;
  /** Aborting cancels the call (the server's handler sees CANCELED). */
  readonly signal?: AbortSignal;
  /** MQTT settings (batching) for the request messages; runtime defaults when left out. */
  readonly settings?: Partial<MethodSettings>;
}

/**
 * A raw call once the server's response headers arrived (Connect's
 * `StreamResponse` without descriptors).
 */
export interface RawStreamResponse {
  /** {@link RawStreamRequest.service} of the call, as given. */
  readonly service: string;
  /** {@link RawStreamRequest.method} of the call, as given. */
  readonly method: string;
  /** Response headers. */
  readonly header: Headers;
  /** Response trailers, complete once {@link message} is read to its end. */
  readonly trailer: Headers;
  /**
   * Response messages (protobuf binary) as they arrive, then the call's
   * status: iteration ends for OK and throws the `ConnectError` otherwise
   * (its metadata holds headers and trailers). Reading is what grants the
   * server credit; a reader that stops early should call `return()` (a
   * `break` in `for await` does), which cancels the call.
   */
  readonly message: AsyncIterable<Uint8Array>;
}
