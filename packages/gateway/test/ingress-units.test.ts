/**
 * The ingress's pure pieces without a broker: grpc-web-text decoding at
 * every split of the body, the metadata it forwards and the one it keeps
 * back, the `grpc-message` encoding, and how requests are told apart.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { requestMetadata, statusTrailer } from "../src/ingress/grpc-metadata.js";
import { decodeBase64Body } from "../src/ingress/grpc-web-text.js";
import { requestKind } from "../src/ingress/ingress-protocol.js";

async function decodeAll(chunks: string[]): Promise<number[]> {
  const out: number[] = [];
  async function* body() {
    for (const c of chunks) yield Buffer.from(c, "latin1");
  }
  for await (const bytes of decodeBase64Body(body())) out.push(...bytes);
  return out;
}

describe("grpc-web-text", () => {
  const bytes = Array.from({ length: 23 }, (_, i) => (i * 37) & 0xff);
  // Three runs, each padded on its own (1, 2 and 0 padding characters).
  const runs = [bytes.slice(0, 5), bytes.slice(5, 9), bytes.slice(9)];
  const text = runs.map((r) => Buffer.from(r).toString("base64")).join("");

  it("decodes padded runs back to back, however the body is split", async () => {
    expect(text).toMatch(/=.+==.+/);
    for (let a = 0; a <= text.length; a++) {
      for (let b = a; b <= text.length; b += 3) {
        expect(await decodeAll([text.slice(0, a), text.slice(a, b), text.slice(b)])).toEqual(bytes);
      }
    }
  });

  it("ignores line breaks; refuses bad characters, misplaced padding and a cut quantum", async () => {
    expect(await decodeAll([`${text.slice(0, 6)}\r\n${text.slice(6)}`])).toEqual(bytes);
    for (const bad of ["ab*d", "a=bc", "ab=c", "abc"]) {
      const e = await decodeAll([bad]).catch((err: unknown) => err);
      expect(e, bad).toBeInstanceOf(ConnectError);
      expect((e as ConnectError).code, bad).toBe(Code.InvalidArgument);
    }
  });
});

describe("metadata", () => {
  it("forwards application metadata, -bin values as they are; keeps protocol headers back", () => {
    const metadata = requestMetadata({
      ":path": "/a.B/C",
      ":authority": "x",
      "content-type": "application/grpc",
      te: "trailers",
      "grpc-timeout": "1S",
      "grpc-encoding": "gzip",
      "connect-protocol-version": "1",
      "mqrpc-server-id": "dev-42",
      "user-agent": "grpc-node-js/1.14",
      authorization: "Bearer t",
      "x-trace-bin": "AAEC",
      "x-list": ["a", "b"],
      "x-bad": "a\r\nb",
    });
    expect(Object.fromEntries(metadata as unknown as Iterable<[string, string]>)).toEqual({
      "user-agent": "grpc-node-js/1.14",
      authorization: "Bearer t",
      "x-trace-bin": "AAEC",
      "x-list": "a, b",
    });
  });

  it("grpc-message: UTF-8 percent-encoded, printable ASCII but % left as it is", () => {
    const error = new ConnectError("50%: ok/no\t☺", Code.Unknown);
    const trailer = statusTrailer(new Headers({ "x-t": "1", "grpc-status": "0" }), error);
    expect(trailer.get("grpc-status")).toBe("2");
    expect(trailer.get("grpc-message")).toBe("50%25: ok/no%09%E2%98%BA");
    expect(trailer.get("x-t")).toBe("1");
    expect(statusTrailer(undefined, undefined).get("grpc-status")).toBe("0");
  });
});

describe("requestKind", () => {
  it("tells the protocols and codecs apart", () => {
    const kind = (method: string, type?: string) => {
      const { protocol, codec } = requestKind(
        method,
        type === undefined ? {} : { "content-type": type },
      );
      return `${protocol}/${codec}`;
    };
    expect(kind("POST", "application/grpc")).toBe("grpc/proto");
    expect(kind("POST", "application/grpc+json")).toBe("grpc/json");
    expect(kind("POST", "application/grpc-web+proto")).toBe("grpc-web/proto");
    expect(kind("POST", "application/grpc-web-text")).toBe("grpc-web-text/proto");
    expect(kind("POST", "application/connect+json")).toBe("connect-stream/json");
    expect(kind("POST", "application/json; charset=utf-8")).toBe("connect/json");
    expect(kind("POST", "application/proto")).toBe("connect/proto");
    expect(kind("GET")).toBe("connect/json");
    expect(kind("POST", "text/html")).toBe("unknown/");
  });
});
