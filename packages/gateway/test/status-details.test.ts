import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { describe, expect, it } from "vitest";
import { decodeRpcStatus } from "./support/status-details.js";

describe("decodeRpcStatus", () => {
  it("reads code, message and each detail's type name and bytes, skipping unknown fields", () => {
    const any = new BinaryWriter()
      .tag(1, 2)
      .string("type.googleapis.com/google.rpc.RetryInfo")
      .tag(2, 2)
      .bytes(new Uint8Array([8, 1]))
      .finish();
    const bytes = new BinaryWriter()
      .tag(1, 0)
      .int32(14)
      .tag(2, 2)
      .string("try later ☺")
      .tag(3, 2)
      .bytes(any)
      .tag(9, 0)
      .int32(7)
      .finish();
    expect(decodeRpcStatus(bytes)).toEqual({
      code: 14,
      message: "try later ☺",
      details: [{ type: "google.rpc.RetryInfo", value: new Uint8Array([8, 1]) }],
    });
  });

  it("throws on bytes that are not a message", () => {
    expect(() => decodeRpcStatus(new Uint8Array([0x0a, 0x05, 1]))).toThrow();
  });
});
