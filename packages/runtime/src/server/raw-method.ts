/**
 * Methods served without a schema: the handler sees serialized messages as
 * they travel (protobuf binary, untouched), the way grpc-go's
 * `UnknownServiceHandler` and grpc-js's generic handlers with identity
 * serializers do. This is what a gateway in front of another RPC server
 * needs: it forwards bytes, so unknown fields survive and no schema is
 * required.
 */
import type { DescMethod } from "@bufbuild/protobuf";
import type { MethodSettings } from "../method-settings.js";

/** The four RPC kinds, as protobuf-es names them (`DescMethod.methodKind`). */
export type MethodKind = DescMethod["methodKind"];

/**
 * What a {@link RawHandler} knows of its call: Connect's `HandlerContext`
 * without the descriptors (a raw method has none).
 */
export interface RawCallContext {
  /** Fully qualified service name from the request topic, e.g. `acme.power.v1.PowerService`. */
  readonly service: string;
  /** Method name as in the proto, e.g. `SetLed`. */
  readonly method: string;
  /** The caller's client key (its reply topic segment; docs/PROTOCOL.md section 4). */
  readonly clientKey: string;
  /**
   * Aborts on the caller's deadline (reason: ConnectError DEADLINE_EXCEEDED),
   * its Cancel or disappearance (CANCELED / UNAVAILABLE), server shutdown
   * (UNAVAILABLE), and once the call is over.
   */
  readonly signal: AbortSignal;
  /** The caller's remaining time in ms, or undefined without a deadline. */
  timeoutMs(): number | undefined;
  /** Request metadata, `-bin` keys base64 as in Connect. */
  readonly requestHeader: Headers;
  /** Response headers: sent with the first response message, or with the End. */
  readonly responseHeader: Headers;
  /** Response trailers: sent with the End. */
  readonly responseTrailer: Headers;
}

/**
 * Serves one call of a raw method. `requests` yields each request message
 * (protobuf binary) as the caller sends it and ends at the caller's
 * half-close; reading it is what grants the caller flow-control credit, so
 * a handler that reads slowly slows the caller. The handler yields response
 * messages; the next one is asked for only when the previous one was
 * accepted under the caller's credit window (backpressure). Returning ends
 * the call with OK; throwing a `ConnectError` ends it with that code,
 * message, details and metadata (as trailers); any other error ends it with
 * UNKNOWN. Connect interceptors do not run for raw methods (they need
 * descriptors).
 */
export type RawHandler = (
  requests: AsyncIterable<Uint8Array>,
  context: RawCallContext,
) => AsyncIterable<Uint8Array>;

/** A method served by a {@link RawHandler}. */
export interface RawMethod {
  /**
   * Serves each call of the method: gets the request messages and the
   * call's context, yields the response messages (protobuf binary); see
   * {@link RawHandler} for how returning and throwing end the call.
   */
  readonly handler: RawHandler;
  /**
   * The method's kind when known (from a schema). It only changes how the
   * response travels: `unary` and `client_streaming` send their one response
   * inside the End frame (one publish fewer), and a second response fails the
   * call with INTERNAL. Unknown (the default), every call is treated as a
   * bidi stream, which carries every kind correctly.
   */
  readonly kind?: MethodKind;
  /** MQTT settings (batching) for the method's responses; runtime defaults when left out. */
  readonly settings?: Partial<MethodSettings>;
}

/**
 * Finds the raw method for a call to a service that is not registered with
 * `MqttServer.service()`: `service` is fully qualified, `method` the proto
 * name. Undefined answers UNIMPLEMENTED. Asked once per call, at its Open.
 */
export type RawMethodResolver = (service: string, method: string) => RawMethod | undefined;
