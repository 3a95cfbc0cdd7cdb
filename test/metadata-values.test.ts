/**
 * Metadata values as gRPC allows them: a `-bin` key with several values
 * (which `Headers` holds joined, `a, b`) travels as one entry per value,
 * both ways; response metadata a handler set that cannot travel (a `-bin`
 * value that is not base64) fails the call with a status that says so,
 * never leaves the caller waiting for an End.
 */
import {
  Code,
  ConnectError,
  createClient,
  decodeBinaryHeader,
  encodeBinaryHeader,
} from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { forBrokersWhere } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import { Closer, startServer, startTransport, uniqueServerId } from "./support/rpc-fixture.js";

const A = new Uint8Array([0]);
const B = new Uint8Array([1, 2]);

/** The values of a `-bin` field `Headers` joined, decoded one by one. */
function binaryValues(joined: string | null | undefined): number[][] {
  if (joined === null || joined === undefined) return [];
  return joined.split(",").map((v) => [...decodeBinaryHeader(v.trim())]);
}

forBrokersWhere(
  (t) => t.name === "aedes" || t.name === "mosquitto-5",
  (target) => {
    describe("metadata values", () => {
      const closer = new Closer();
      let client: ReturnType<typeof createClient<typeof TestService>>;
      /** What the handler does with its context, per test. */
      let respond: (header: Headers, trailer: Headers, request: Headers) => void;

      beforeEach(async () => {
        const serverId = uniqueServerId("metadata");
        const server = await startServer(closer, target, { serverId });
        server.service(TestService, {
          unaryCall(_req, ctx) {
            respond(ctx.responseHeader, ctx.responseTrailer, ctx.requestHeader);
            return {};
          },
          async *streamingOutputCall(_req, ctx) {
            respond(ctx.responseHeader, ctx.responseTrailer, ctx.requestHeader);
            yield {};
            yield {};
          },
        });
        client = createClient(TestService, startTransport(closer, target, { serverId }));
      });
      afterEach(() => closer.closeAll());

      it("a -bin key with two values travels as two, request and response, headers and trailers", async () => {
        let seen: number[][] = [];
        respond = (header, trailer, request) => {
          seen = binaryValues(request.get("x-req-bin"));
          header.append("x-h-bin", encodeBinaryHeader(A));
          header.append("x-h-bin", encodeBinaryHeader(B));
          trailer.append("x-t-bin", encodeBinaryHeader(B));
          trailer.append("x-t-bin", encodeBinaryHeader(A));
        };
        const header = new Headers();
        header.append("x-req-bin", encodeBinaryHeader(A));
        header.append("x-req-bin", encodeBinaryHeader(B));
        let responseHeader: Headers | undefined;
        let responseTrailer: Headers | undefined;
        await client.unaryCall(
          {},
          {
            headers: header,
            onHeader: (h) => {
              responseHeader = h;
            },
            onTrailer: (t) => {
              responseTrailer = t;
            },
          },
        );
        expect(seen).toEqual([[0], [1, 2]]);
        expect(binaryValues(responseHeader?.get("x-h-bin"))).toEqual([[0], [1, 2]]);
        expect(binaryValues(responseTrailer?.get("x-t-bin"))).toEqual([[1, 2], [0]]);
      });

      it("a response -bin value that is not base64 fails the call INTERNAL naming it, unary and streaming", async () => {
        for (const where of ["header", "trailer"] as const) {
          respond = (header, trailer) => {
            (where === "header" ? header : trailer).set("x-bad-bin", "%%%");
          };
          const expected = new ConnectError(
            'response metadata "x-bad-bin" is not valid base64',
            Code.Internal,
          );
          await expect(client.unaryCall({})).rejects.toMatchObject({
            code: expected.code,
            rawMessage: expected.rawMessage,
          });
          const stream = async () => {
            for await (const _ of client.streamingOutputCall({})) {
              // Drained.
            }
          };
          await expect(stream()).rejects.toMatchObject({
            code: expected.code,
            rawMessage: expected.rawMessage,
          });
        }
      });

      it("a handler's error keeps its status when its metadata cannot travel", async () => {
        respond = (_header, trailer) => {
          trailer.set("x-bad-bin", "%%%");
          throw new ConnectError("no such thing", Code.NotFound, { "x-fine": "yes" });
        };
        const error = await client.unaryCall({}).catch((e: unknown) => ConnectError.from(e));
        expect(error).toBeInstanceOf(ConnectError);
        expect((error as ConnectError).code).toBe(Code.NotFound);
        expect((error as ConnectError).rawMessage).toBe(
          'no such thing (its metadata was left out: response metadata "x-bad-bin" is not valid base64)',
        );
      });

      it("a request -bin value that is not base64 is the caller's INVALID_ARGUMENT", async () => {
        respond = () => {};
        await expect(
          client.unaryCall({}, { headers: { "x-bad-bin": "%%%" } }),
        ).rejects.toMatchObject({
          code: Code.InvalidArgument,
          rawMessage: 'header "x-bad-bin" is not valid base64',
        });
      });
    });
  },
);
