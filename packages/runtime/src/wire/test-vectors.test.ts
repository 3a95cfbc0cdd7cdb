/**
 * docs/test-vectors.json is the executable appendix of docs/PROTOCOL.md:
 * every vector must decode to its stated meaning (protobuf JSON form) and
 * re-encode to the same bytes, every topic-segment example must encode and
 * decode as listed, and every frame kind must have a vector, so a kind added
 * to wire.proto without a vector fails here.
 */
import { readFileSync } from "node:fs";
import { fromBinary, type JsonValue, toBinary, toJson } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { FrameSchema, PresenceSchema } from "../gen/mqrpc/v1/wire_pb.js";
import { decodeFrame, encodeFrame, PROTOCOL_VERSION } from "./frame-codec.js";
import { decodeTopicSegment, encodeTopicSegment } from "./topic-scheme.js";

interface FrameVector {
  readonly name: string;
  readonly description: string;
  readonly hex: string;
  readonly message: "mqrpc.v1.Frame" | "mqrpc.v1.Presence";
  readonly json: JsonValue;
}

interface TopicSegmentVector {
  readonly raw: string;
  readonly encoded: string;
}

interface Vectors {
  readonly frames: readonly FrameVector[];
  readonly topicSegments: readonly TopicSegmentVector[];
}

const vectors = JSON.parse(
  readFileSync(new URL("../../../../docs/test-vectors.json", import.meta.url), "utf8"),
) as Vectors;

function fromHex(hex: string): Uint8Array {
  return new Uint8Array(Buffer.from(hex, "hex"));
}

function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

const frameVectors = vectors.frames.filter((v) => v.message === "mqrpc.v1.Frame");
const presenceVectors = vectors.frames.filter((v) => v.message === "mqrpc.v1.Presence");

describe("protocol test vectors: file", () => {
  it("is well formed: unique names, lower-case hex, known message types", () => {
    expect(vectors.frames.length).toBeGreaterThan(0);
    const names = new Set<string>();
    for (const v of vectors.frames) {
      expect(names.has(v.name), `duplicate vector name ${v.name}`).toBe(false);
      names.add(v.name);
      expect(v.description.length, v.name).toBeGreaterThan(0);
      expect(v.hex, v.name).toMatch(/^([0-9a-f]{2})+$/);
      expect(["mqrpc.v1.Frame", "mqrpc.v1.Presence"], v.name).toContain(v.message);
    }
    expect(presenceVectors.length).toBeGreaterThan(0);
  });
});

describe("protocol test vectors: frames", () => {
  for (const v of frameVectors) {
    it(`${v.name}: decodes to its meaning and re-encodes byte for byte`, () => {
      const bytes = fromHex(v.hex);
      const frame = decodeFrame(bytes);
      expect(frame.version).toBe(PROTOCOL_VERSION);
      expect(toJson(FrameSchema, frame)).toEqual(v.json);
      expect(toHex(toBinary(FrameSchema, frame))).toBe(v.hex);
      const { callId, seq, kind } = frame;
      expect(toHex(encodeFrame({ callId, seq, kind }))).toBe(v.hex);
    });
  }
});

describe("protocol test vectors: presence", () => {
  for (const v of presenceVectors) {
    it(`${v.name}: decodes to its meaning and re-encodes byte for byte`, () => {
      const presence = fromBinary(PresenceSchema, fromHex(v.hex));
      expect(presence.version).toBe(PROTOCOL_VERSION);
      expect(toJson(PresenceSchema, presence)).toEqual(v.json);
      expect(toHex(toBinary(PresenceSchema, presence))).toBe(v.hex);
    });
  }
});

describe("protocol test vectors: coverage", () => {
  it("has a vector for every frame kind in wire.proto", () => {
    const oneof = FrameSchema.oneofs.find((o) => o.name === "kind");
    expect(oneof, "Frame has a oneof named kind").toBeDefined();
    const kinds = oneof?.fields.map((f) => f.localName) ?? [];
    expect(kinds.length).toBeGreaterThan(0);
    const covered = new Set<string>(frameVectors.map((v) => decodeFrame(fromHex(v.hex)).kind.case));
    for (const kind of kinds) {
      expect(covered.has(kind), `no test vector for frame kind "${kind}"`).toBe(true);
    }
  });
});

describe("protocol test vectors: topic segments", () => {
  it("lists at least eight examples", () => {
    expect(vectors.topicSegments.length).toBeGreaterThanOrEqual(8);
  });

  for (const { raw, encoded } of vectors.topicSegments) {
    it(`${JSON.stringify(raw)} <-> ${encoded}`, () => {
      expect(encodeTopicSegment(raw)).toBe(encoded);
      expect(decodeTopicSegment(encoded)).toBe(raw);
    });
  }
});
