import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { MetadataEntrySchema } from "../gen/mqrpc/v1/wire_pb.js";
import { PacketTooLargeError } from "../link/publish-error.js";
import { encodeFrame } from "../wire/frame-codec.js";
import { isTooLargeForBroker, oversizedReplyMessage } from "./oversized-reply.js";

const text = (key: string, value: string) =>
  create(MetadataEntrySchema, { key, value: { case: "text", value } });
const binary = (key: string, value: Uint8Array) =>
  create(MetadataEntrySchema, { key, value: { case: "binary", value } });

const headersFrame = encodeFrame({
  callId: 7,
  seq: 0,
  kind: {
    case: "headers",
    value: { headers: [text("x-big", "r".repeat(40 * 1024))], instance: "", window: 0 },
  },
});
const refusedBeforeSending = new PacketTooLargeError(41_032, 16_384, false);

describe("oversizedReplyMessage", () => {
  it("names response headers and their bytes (keys and values), and the limit the broker announced", () => {
    expect(oversizedReplyMessage(headersFrame, refusedBeforeSending, 16_384)).toBe(
      "the reply's metadata (40965 bytes of response headers) exceeds the broker's maximum packet size (16384 bytes)",
    );
  });

  it("says a limit the link learned (MQTT 3.1.1) is this server's, not the broker's word", () => {
    const learned = new PacketTooLargeError(41_032, 20_523, false);
    expect(oversizedReplyMessage(headersFrame, learned, undefined)).toBe(
      "the reply's metadata (40965 bytes of response headers) exceeds the broker's maximum packet size " +
        "(this server publishes at most 20523 bytes to it, learned when the broker closed the connection on a larger publish)",
    );
  });

  it("names the publish the broker closed the connection on, and a bare MQTT 5 refusal", () => {
    const closed = new PacketTooLargeError(41_032, 20_516, true);
    expect(oversizedReplyMessage(headersFrame, closed)).toMatch(
      /\(the broker closed the connection on a publish of 41032 bytes\)$/,
    );
    expect(oversizedReplyMessage(headersFrame, { code: 0x95 })).toMatch(
      /\(the broker refused the publish as too large\)$/,
    );
  });

  it("counts an End's headers, trailers (binary ones by their bytes) and status", () => {
    const end = encodeFrame({
      callId: 7,
      seq: 3,
      kind: {
        case: "end",
        value: {
          status: { code: 2, message: "é".repeat(10) },
          headers: [text("h", "1234")],
          trailers: [binary("t-bin", new Uint8Array(30_000))],
          message: new Uint8Array(100),
        },
      },
    });
    expect(oversizedReplyMessage(end, refusedBeforeSending, 16_384)).toBe(
      "the reply's metadata (30030 bytes of response headers and response trailers and status message and details) " +
        "exceeds the broker's maximum packet size (16384 bytes)",
    );
    const trailersOnly = encodeFrame({
      callId: 7,
      seq: 3,
      kind: {
        case: "end",
        value: { status: { code: 0 }, trailers: [text("t", "v".repeat(20_000))] },
      },
    });
    expect(oversizedReplyMessage(trailersOnly, refusedBeforeSending, 16_384)).toMatch(
      /^the reply's metadata \(20001 bytes of response trailers\) exceeds/,
    );
  });

  it("names the frame, with the advice that chunks messages, when a message makes it large", () => {
    const message = encodeFrame({
      callId: 7,
      seq: 1,
      kind: { case: "message", value: new Uint8Array(30_000) },
    });
    const endWithMessage = encodeFrame({
      callId: 7,
      seq: 1,
      kind: {
        case: "end",
        value: { status: { code: 0 }, trailers: [text("t", "v")], message: new Uint8Array(30_000) },
      },
    });
    for (const frame of [message, endWithMessage]) {
      expect(oversizedReplyMessage(frame, refusedBeforeSending, 16_384)).toBe(
        `a reply frame of ${frame.byteLength} bytes exceeds the broker's maximum packet size (16384 bytes); ` +
          "set the server's maxPublishBytes to the broker's maximum packet size so that large messages are chunked",
      );
    }
  });

  it("still answers for bytes that are no frame", () => {
    expect(oversizedReplyMessage(new Uint8Array([0xff, 0xff]), refusedBeforeSending)).toMatch(
      /^a reply frame of 2 bytes exceeds/,
    );
  });
});

describe("isTooLargeForBroker", () => {
  it("is the link's PacketTooLargeError or reason code 0x95, nothing else", () => {
    expect(isTooLargeForBroker(refusedBeforeSending)).toBe(true);
    expect(isTooLargeForBroker(Object.assign(new Error("Packet too large"), { code: 0x95 }))).toBe(
      true,
    );
    expect(isTooLargeForBroker(Object.assign(new Error("Quota exceeded"), { code: 0x97 }))).toBe(
      false,
    );
    expect(isTooLargeForBroker(new Error("client disconnecting"))).toBe(false);
    expect(isTooLargeForBroker(undefined)).toBe(false);
  });
});
