/**
 * TestService as the gRPC interop spec describes it: echoes the
 * `x-grpc-test-echo-initial` header and `x-grpc-test-echo-trailing-bin`
 * trailer, answers with the requested payload sizes and the requested status.
 */
import {
  type Code,
  ConnectError,
  type HandlerContext,
  type ServiceImpl,
} from "@connectrpc/connect";
import type { EchoStatus, TestService } from "../gen/mqrpc/interop/v1/test_pb.js";

const ECHO_INITIAL = "x-grpc-test-echo-initial";
const ECHO_TRAILING = "x-grpc-test-echo-trailing-bin";

function echoMetadata(ctx: HandlerContext): void {
  const initial = ctx.requestHeader.get(ECHO_INITIAL);
  if (initial !== null) ctx.responseHeader.set(ECHO_INITIAL, initial);
  const trailing = ctx.requestHeader.get(ECHO_TRAILING);
  if (trailing !== null) ctx.responseTrailer.set(ECHO_TRAILING, trailing);
}

function maybeFail(status: EchoStatus | undefined): void {
  if (status !== undefined && status.code !== 0) {
    throw new ConnectError(status.message, status.code as Code);
  }
}

function payload(size: number) {
  return { body: new Uint8Array(size) };
}

/** The interop implementation; UnimplementedCall is left out on purpose. */
export const interopService: Partial<ServiceImpl<typeof TestService>> = {
  emptyCall(_req, ctx) {
    echoMetadata(ctx);
    return {};
  },
  unaryCall(req, ctx) {
    echoMetadata(ctx);
    maybeFail(req.responseStatus);
    return { payload: payload(req.responseSize) };
  },
  async *streamingOutputCall(req, ctx) {
    echoMetadata(ctx);
    for (const p of req.responseParameters) {
      if (p.intervalUs > 0) await new Promise((r) => setTimeout(r, p.intervalUs / 1000));
      yield { payload: payload(p.size) };
    }
    maybeFail(req.responseStatus);
  },
  async streamingInputCall(reqs, ctx) {
    echoMetadata(ctx);
    let size = 0;
    for await (const r of reqs) size += r.payload?.body.byteLength ?? 0;
    return { aggregatedPayloadSize: size };
  },
  async *fullDuplexCall(reqs, ctx) {
    echoMetadata(ctx);
    for await (const r of reqs) {
      maybeFail(r.responseStatus);
      for (const p of r.responseParameters) yield { payload: payload(p.size) };
    }
  },
};
