/**
 * Calls that need a schema (the Connect protocol, and gRPC or gRPC-Web with
 * the JSON codec) are served by Connect's own Node adapter, with a router
 * built from the device's schema whose every method forwards the decoded
 * request over the device's MQTT transport: Connect parses and writes each
 * protocol, the transport carries the call, and this file only connects the
 * two (metadata both ways, deadline, cancellation).
 */
import type { DescMessage, DescMethod, DescMethodUnary, MessageShape } from "@bufbuild/protobuf";
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { MqttTransport } from "@mqrpc/runtime";
import { ServerReflection as ReflectionV1 } from "@mqrpc/runtime/proto/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ReflectionV1alpha } from "@mqrpc/runtime/proto/grpc/reflection/v1alpha/reflection_pb.js";
import type { DeviceSchema } from "./device-schema.js";
import { copyMetadata } from "./grpc-metadata.js";

/** Options of {@link connectHandler}. */
export interface ConnectHandlerOptions {
  /** Largest request message accepted, in bytes. */
  readonly maxMessageBytes: number;
  /** Aborts every call in flight (the ingress is closing). */
  readonly shutdownSignal: AbortSignal;
}

/**
 * gRPC server reflection, forwarded in every protocol whether or not the
 * device lists it among its services: `buf curl` asks for it in the
 * protocol of the call (Connect by default).
 */
const REFLECTION_SERVICES = [ReflectionV1, ReflectionV1alpha];

/**
 * A Node request handler serving every method of `schema`, and gRPC server
 * reflection, in the Connect, gRPC and gRPC-Web protocols (all codecs),
 * each call forwarded to the device through `transport`. Unknown methods
 * get 404 (UNIMPLEMENTED).
 */
export function connectHandler(
  schema: DeviceSchema,
  transport: MqttTransport,
  options: ConnectHandlerOptions,
): ReturnType<typeof connectNodeAdapter> {
  return connectNodeAdapter({
    routes: (router) => {
      const served = new Set<string>();
      for (const service of schema.services) {
        served.add(service.typeName);
        for (const method of service.methods) route(router, method, transport);
      }
      for (const service of REFLECTION_SERVICES) {
        if (served.has(service.typeName)) continue;
        for (const method of service.methods) route(router, method, transport);
      }
    },
    readMaxBytes: options.maxMessageBytes,
    shutdownSignal: options.shutdownSignal,
    jsonOptions: { registry: schema.registry },
  });
}

type Message = MessageShape<DescMessage>;
type StreamingMethod = DescMethod & {
  methodKind: "server_streaming" | "client_streaming" | "bidi_streaming";
};

/** Registers one method whose implementation forwards to `transport`. */
function route(router: ConnectRouter, method: DescMethod, transport: MqttTransport): void {
  const rpc = (impl: unknown) =>
    (router.rpc as (method: DescMethod, impl: unknown) => ConnectRouter).call(router, method, impl);
  if (method.methodKind === "unary") {
    const unary = method as DescMethodUnary;
    rpc(async (request: Message, ctx: HandlerContext) => {
      const response = await transport.unary(
        unary,
        ctx.signal,
        ctx.timeoutMs(),
        callHeader(ctx),
        request,
      );
      copyMetadata(response.header, ctx.responseHeader);
      copyMetadata(response.trailer, ctx.responseTrailer);
      return response.message;
    });
    return;
  }
  const streaming = method as StreamingMethod;
  switch (streaming.methodKind) {
    case "server_streaming":
      rpc(async function* (request: Message, ctx: HandlerContext) {
        yield* forwardStream(transport, streaming, ctx, one(request));
      });
      return;
    case "client_streaming":
      rpc(async (requests: AsyncIterable<Message>, ctx: HandlerContext) => {
        let last: Message | undefined;
        for await (const message of forwardStream(transport, streaming, ctx, requests))
          last = message;
        return last;
      });
      return;
    case "bidi_streaming":
      rpc(async function* (requests: AsyncIterable<Message>, ctx: HandlerContext) {
        yield* forwardStream(transport, streaming, ctx, requests);
      });
      return;
  }
}

async function* forwardStream(
  transport: MqttTransport,
  method: StreamingMethod,
  ctx: HandlerContext,
  requests: AsyncIterable<Message>,
): AsyncGenerator<Message> {
  const response = await transport.stream(
    method,
    ctx.signal,
    ctx.timeoutMs(),
    callHeader(ctx),
    requests,
  );
  copyMetadata(response.header, ctx.responseHeader);
  yield* response.message;
  copyMetadata(response.trailer, ctx.responseTrailer);
}

function callHeader(ctx: HandlerContext): Headers {
  return copyMetadata(ctx.requestHeader, new Headers());
}

async function* one(message: Message): AsyncGenerator<Message> {
  yield message;
}
