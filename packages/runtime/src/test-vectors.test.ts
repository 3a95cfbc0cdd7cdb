/**
 * docs/test-vectors.json is the protocol's executable appendix: every vector
 * must decode to its stated meaning and re-encode to the same bytes, and
 * every frame kind must have a vector.
 */
import { readFileSync } from "node:fs";
import { fromBinary, type JsonValue, toBinary, toJson } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { decodeFrame, encodeFrame } from "./frame-codec.js";
import { FrameSchema, PresenceSchema } from "./gen/mqrpc/v1/wire_pb.js";
import { decodeTopicSegment, encodeTopicSegment } from "./topic-scheme.js";

interface Vectors {
  version: number;
  frames: Array<{
    name: string;
    description: string;
    message: string;
    hex: string;
    json: JsonValue;
  }>;
  topicSegments: Array<{ raw: string; encoded: string }>;
}

const vectors = JSON.parse(
  readFileSync(new URL("../../../docs/test-vectors.json", import.meta.url), "utf8"),
) as Vectors;
const bytes = (hex: string) => new Uint8Array(Buffer.from(hex, "hex"));
const hexOf = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("protocol test vectors", () => {
  for (const v of vectors.frames) {
    it(`${v.name}: decodes to its meaning and re-encodes byte for byte`, () => {
      if (v.message === "mqrpc.v1.Frame") {
        const frame = decodeFrame(bytes(v.hex));
        expect(toJson(FrameSchema, frame)).toEqual(v.json);
        expect(hexOf(toBinary(FrameSchema, frame))).toBe(v.hex);
        const { callId, seq, kind } = frame;
        expect(hexOf(encodeFrame({ callId, seq, kind }))).toBe(v.hex);
      } else {
        expect(v.message).toBe("mqrpc.v1.Presence");
        const presence = fromBinary(PresenceSchema, bytes(v.hex));
        expect(toJson(PresenceSchema, presence)).toEqual(v.json);
        expect(hexOf(toBinary(PresenceSchema, presence))).toBe(v.hex);
      }
    });
  }

  it("covers every frame kind", () => {
    const kinds =
      FrameSchema.oneofs.find((o) => o.name === "kind")?.fields.map((f) => f.localName) ?? [];
    expect(kinds.length).toBeGreaterThan(10);
    const covered = new Set(
      vectors.frames
        .filter((v) => v.message === "mqrpc.v1.Frame")
        .map((v) => decodeFrame(bytes(v.hex)).kind.case),
    );
    for (const kind of kinds) expect(covered, `no vector for frame kind ${kind}`).toContain(kind);
  });

  it("topic segments encode and decode as listed", () => {
    for (const { raw, encoded } of vectors.topicSegments) {
      expect(encodeTopicSegment(raw)).toBe(encoded);
      expect(decodeTopicSegment(encoded)).toBe(raw);
    }
  });
});
