/**
 * docs/test-vectors.json for byte-stream connections (PROTOCOL.md section
 * 23): every TunnelMessage vector decodes to its meaning and the bridge
 * encodes that meaning to the same bytes; the tunnel frame vectors carry
 * TunnelMessages that do the same; port methods and their names map both
 * ways and nothing else maps to a port.
 */
import { readFileSync } from "node:fs";
import { fromBinary, type JsonValue, toJson } from "@bufbuild/protobuf";
import { TunnelMessageSchema } from "@mqrpc/runtime/proto/mqrpc/v1/tunnel_pb.js";
import { describe, expect, it } from "vitest";
import { FrameSchema } from "../../runtime/src/gen/mqrpc/v1/wire_pb.js";
import {
  checkPort,
  decodeTunnelMessage,
  encodeTunnelMessage,
  encodeTunnelMessageWithSchema,
  encodeTunnelParts,
  methodPort,
  portMethod,
} from "../src/tunnel-message.js";

interface Vectors {
  readonly frames: readonly { name: string; hex: string; message: string }[];
  readonly tunnelMessages: readonly {
    name: string;
    description: string;
    hex: string;
    json: JsonValue;
  }[];
}

const vectors = JSON.parse(
  readFileSync(new URL("../../../docs/test-vectors.json", import.meta.url), "utf8"),
) as Vectors;

const bytes = (hex: string) => new Uint8Array(Buffer.from(hex, "hex"));
const hexOf = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("tunnel test vectors", () => {
  it("has TunnelMessage vectors, each named and described", () => {
    expect(vectors.tunnelMessages.length).toBeGreaterThanOrEqual(4);
    for (const v of vectors.tunnelMessages) {
      expect(v.description.length, v.name).toBeGreaterThan(0);
      expect(v.hex, v.name).toMatch(/^([0-9a-f]{2})*$/);
    }
  });

  for (const v of vectors.tunnelMessages) {
    it(`${v.name}: decodes to its meaning and re-encodes byte for byte`, () => {
      const message = decodeTunnelMessage(bytes(v.hex));
      expect(toJson(TunnelMessageSchema, message)).toEqual(v.json);
      expect(hexOf(encodeTunnelMessage(message.data, message.endOfStream))).toBe(v.hex);
    });
  }

  it("carries a TunnelMessage in each tunnel frame vector's message", () => {
    const tunnelFrames = vectors.frames.filter((v) => v.name.startsWith("tunnel-"));
    expect(tunnelFrames.map((v) => v.name)).toEqual([
      "tunnel-open",
      "tunnel-accept",
      "tunnel-data",
      "tunnel-end-of-stream",
      "tunnel-reset",
    ]);
    const carried = tunnelFrames
      .map((v) => fromBinary(FrameSchema, bytes(v.hex)))
      .filter((f) => f.kind.case === "message")
      .map((f) => {
        const inner = decodeTunnelMessage(f.kind.value as Uint8Array);
        expect(hexOf(encodeTunnelMessage(inner.data, inner.endOfStream))).toBe(
          hexOf(f.kind.value as Uint8Array),
        );
        return [Buffer.from(inner.data).toString(), inner.endOfStream];
      });
    expect(carried).toEqual([
      ["", false],
      ["hi", false],
      ["!", true],
    ]);
  });

  it("encodes pieces of writes as protobuf-es encodes the joined bytes", () => {
    for (const size of [0, 1, 127, 128, 300, 16383, 16384, 129024, 2_097_152]) {
      const data = new Uint8Array(size).map((_, i) => (i * 7) & 0xff);
      const cut = Math.floor(size / 3);
      const parts = [data.subarray(0, cut), data.subarray(cut, cut), data.subarray(cut)];
      for (const end of [false, true]) {
        expect(hexOf(encodeTunnelParts(parts, size, end)), `${size} ${end}`).toBe(
          hexOf(encodeTunnelMessageWithSchema(data, end)),
        );
      }
    }
  });

  it("maps ports to methods and back, and nothing else to a port", () => {
    expect(portMethod(22)).toBe("Port22");
    expect(methodPort("Port50051")).toBe(50051);
    expect(methodPort("Port65535")).toBe(65535);
    for (const name of ["Port0", "Port65536", "Port022", "port22", "Port", "Port1x", "Port99999"]) {
      expect(methodPort(name), name).toBeUndefined();
    }
    expect(checkPort(1)).toBe(1);
    for (const bad of [0, 65536, 1.5, "22", Number.NaN]) {
      expect(() => checkPort(bad), String(bad)).toThrow(/^port must be an integer from 1 to 65535/);
    }
  });
});
