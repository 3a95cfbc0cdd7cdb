/**
 * Reads `mqrpc.v1.Frame` from protobuf binary without reflection, into the
 * same objects protobuf-es `fromBinary` builds (a property test holds the
 * two together). Bytes fields are views into the publish payload, not
 * copies. Unknown fields are skipped, as protobuf requires; anything that is
 * not well-formed protobuf for this schema throws a {@link WireFormatError}.
 */
import type {
  Batch,
  Cancel,
  Chunk,
  Coalesced,
  Credit,
  End,
  ErrorDetail,
  Frame,
  HalfClose,
  Headers,
  MetadataEntry,
  Open,
  Ping,
  Pong,
  Status,
} from "../gen/mqrpc/v1/wire_pb.js";

/** Bytes that are not a well-formed protobuf `Frame`. */
export class WireFormatError extends Error {
  override name = "WireFormatError";
}

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

const textDecoder = new TextDecoder();

/** Parses a whole buffer as one Frame. */
/**
 * Caps a decoder applies while it reads, before anything else sees a frame
 * (docs/PROTOCOL.md section 4.3): one publish must not cost a receiver
 * seconds or gigabytes by announcing many small things.
 */
/** Metadata entries in one Open, Headers or End. */
export const MAX_METADATA_ENTRIES = 1024;
/** Encoded bytes of the metadata of one Open, Headers or End. */
export const MAX_METADATA_BYTES = 64 * 1024;
/** Messages in one Batch. */
export const MAX_BATCH_MESSAGES = 1024;
/** Frames in one Coalesced publish. */
export const MAX_COALESCED_FRAMES = 1024;

export function readFrame(bytes: Uint8Array): Frame {
  return new Reader(bytes).frame(bytes.byteLength);
}

class Reader {
  private pos = 0;
  /** Metadata entries and bytes of the Open, Headers or End being read. */
  private metadataEntries = 0;
  private metadataBytes = 0;

  constructor(private readonly buf: Uint8Array) {}

  frame(end: number, nested = false): Frame {
    const frame: Frame = {
      $typeName: "mqrpc.v1.Frame",
      version: 0,
      callId: 0,
      seq: 0,
      kind: { case: undefined },
    };
    while (this.pos < end) {
      const t = this.tag();
      const field = t >>> 3;
      const wire = t & 7;
      switch (field) {
        case 1:
          frame.version = this.uint32(wire);
          break;
        case 2:
          frame.callId = this.uint32(wire);
          break;
        case 3:
          frame.seq = this.uint32(wire);
          break;
        case 4:
          frame.kind = { case: "open", value: this.open(this.len(wire)) };
          break;
        case 5:
          frame.kind = { case: "headers", value: this.headers(this.len(wire)) };
          break;
        case 6:
          frame.kind = { case: "message", value: this.bytes(wire) };
          break;
        case 7:
          frame.kind = { case: "batch", value: this.batch(this.len(wire)) };
          break;
        case 8:
          frame.kind = { case: "chunk", value: this.chunk(this.len(wire)) };
          break;
        case 9:
          frame.kind = {
            case: "halfClose",
            value: this.empty<HalfClose>("mqrpc.v1.HalfClose", wire),
          };
          break;
        case 10:
          frame.kind = { case: "end", value: this.end(this.len(wire)) };
          break;
        case 11:
          frame.kind = { case: "cancel", value: this.cancel(this.len(wire)) };
          break;
        case 12:
          frame.kind = { case: "credit", value: this.credit(this.len(wire)) };
          break;
        case 13:
          frame.kind = { case: "ping", value: this.empty<Ping>("mqrpc.v1.Ping", wire) };
          break;
        case 14:
          frame.kind = { case: "pong", value: this.pong(this.len(wire)) };
          break;
        case 15:
          if (nested) throw new WireFormatError("a coalesced frame inside a coalesced frame");
          frame.kind = { case: "coalesced", value: this.coalesced(this.len(wire)) };
          break;
        default:
          this.skip(wire);
      }
    }
    this.checkEnd(end);
    return frame;
  }

  private coalesced(end: number): Coalesced {
    const coalesced: Coalesced = { $typeName: "mqrpc.v1.Coalesced", frames: [] };
    while (this.pos < end) {
      const t = this.tag();
      const field = t >>> 3;
      const wire = t & 7;
      if (field === 1) {
        if (coalesced.frames.length >= MAX_COALESCED_FRAMES) {
          throw new WireFormatError(`more than ${MAX_COALESCED_FRAMES} frames in one Coalesced`);
        }
        coalesced.frames.push(this.frame(this.len(wire), true));
      } else this.skip(wire);
    }
    this.checkEnd(end);
    return coalesced;
  }

  private open(end: number): Open {
    this.metadataEntries = 0;
    this.metadataBytes = 0;
    const open: Open = {
      $typeName: "mqrpc.v1.Open",
      timeoutMs: 0,
      headers: [],
      halfClose: false,
      window: 0,
      heartbeatMs: 0,
      session: 0,
    };
    while (this.pos < end) {
      const t = this.tag();
      const field = t >>> 3;
      const wire = t & 7;
      if (field === 1) open.timeoutMs = this.uint32(wire);
      else if (field === 2) open.headers.push(this.metadata(this.len(wire)));
      else if (field === 3) open.message = this.bytes(wire);
      else if (field === 4) open.halfClose = this.bool(wire);
      else if (field === 5) open.window = this.uint32(wire);
      else if (field === 6) open.heartbeatMs = this.uint32(wire);
      else if (field === 7) open.session = this.uint32(wire);
      else this.skip(wire);
    }
    this.checkEnd(end);
    return open;
  }

  private headers(end: number): Headers {
    this.metadataEntries = 0;
    this.metadataBytes = 0;
    const headers: Headers = {
      $typeName: "mqrpc.v1.Headers",
      headers: [],
      instance: "",
      window: 0,
      incarnation: 0,
    };
    while (this.pos < end) {
      const t = this.tag();
      const field = t >>> 3;
      const wire = t & 7;
      if (field === 1) headers.headers.push(this.metadata(this.len(wire)));
      else if (field === 2) headers.instance = this.string(wire);
      else if (field === 3) headers.window = this.uint32(wire);
      else if (field === 4) headers.incarnation = this.uint32(wire);
      else this.skip(wire);
    }
    this.checkEnd(end);
    return headers;
  }

  private batch(end: number): Batch {
    const batch: Batch = { $typeName: "mqrpc.v1.Batch", messages: [] };
    while (this.pos < end) {
      const t = this.tag();
      const field = t >>> 3;
      const wire = t & 7;
      if (field === 1) {
        if (batch.messages.length >= MAX_BATCH_MESSAGES) {
          throw new WireFormatError(`more than ${MAX_BATCH_MESSAGES} messages in one Batch`);
        }
        batch.messages.push(this.bytes(wire));
      } else this.skip(wire);
    }
    this.checkEnd(end);
    return batch;
  }

  private chunk(end: number): Chunk {
    const chunk: Chunk = {
      $typeName: "mqrpc.v1.Chunk",
      totalSize: 0,
      offset: 0,
      data: new Uint8Array(0),
    };
    while (this.pos < end) {
      const t = this.tag();
      const field = t >>> 3;
      const wire = t & 7;
      if (field === 1) chunk.totalSize = this.uint32(wire);
      else if (field === 2) chunk.offset = this.uint32(wire);
      else if (field === 3) chunk.data = this.bytes(wire);
      else this.skip(wire);
    }
    this.checkEnd(end);
    return chunk;
  }

  private end(end: number): End {
    this.metadataEntries = 0;
    this.metadataBytes = 0;
    const result: End = { $typeName: "mqrpc.v1.End", trailers: [], headers: [], ack: false };
    while (this.pos < end) {
      const t = this.tag();
      const field = t >>> 3;
      const wire = t & 7;
      if (field === 1) result.status = this.status(this.len(wire));
      else if (field === 2) result.trailers.push(this.metadata(this.len(wire)));
      else if (field === 3) result.headers.push(this.metadata(this.len(wire)));
      else if (field === 4) result.message = this.bytes(wire);
      else if (field === 5) result.ack = this.bool(wire);
      else this.skip(wire);
    }
    this.checkEnd(end);
    return result;
  }

  private status(end: number): Status {
    const status: Status = { $typeName: "mqrpc.v1.Status", code: 0, message: "", details: [] };
    while (this.pos < end) {
      const t = this.tag();
      const field = t >>> 3;
      const wire = t & 7;
      if (field === 1) status.code = this.uint32(wire);
      else if (field === 2) status.message = this.string(wire);
      else if (field === 3) status.details.push(this.detail(this.len(wire)));
      else this.skip(wire);
    }
    this.checkEnd(end);
    return status;
  }

  private detail(end: number): ErrorDetail {
    const detail: ErrorDetail = {
      $typeName: "mqrpc.v1.ErrorDetail",
      type: "",
      value: new Uint8Array(0),
    };
    while (this.pos < end) {
      const t = this.tag();
      const field = t >>> 3;
      const wire = t & 7;
      if (field === 1) detail.type = this.string(wire);
      else if (field === 2) detail.value = this.bytes(wire);
      else this.skip(wire);
    }
    this.checkEnd(end);
    return detail;
  }

  private cancel(end: number): Cancel {
    const cancel: Cancel = { $typeName: "mqrpc.v1.Cancel", code: 0 };
    while (this.pos < end) {
      const t = this.tag();
      const field = t >>> 3;
      const wire = t & 7;
      if (field === 1) cancel.code = this.uint32(wire);
      else this.skip(wire);
    }
    this.checkEnd(end);
    return cancel;
  }

  private credit(end: number): Credit {
    const credit: Credit = { $typeName: "mqrpc.v1.Credit", limit: 0, received: 0, resend: false };
    while (this.pos < end) {
      const t = this.tag();
      const field = t >>> 3;
      const wire = t & 7;
      if (field === 1) credit.limit = this.uint32(wire);
      else if (field === 2) credit.received = this.uint32(wire);
      else if (field === 3) credit.resend = this.bool(wire);
      else this.skip(wire);
    }
    this.checkEnd(end);
    return credit;
  }

  private pong(end: number): Pong {
    const pong: Pong = { $typeName: "mqrpc.v1.Pong", incarnation: 0, unknown: false };
    while (this.pos < end) {
      const t = this.tag();
      const field = t >>> 3;
      const wire = t & 7;
      if (field === 1) pong.incarnation = this.uint32(wire);
      else if (field === 2) pong.unknown = this.bool(wire);
      else this.skip(wire);
    }
    this.checkEnd(end);
    return pong;
  }

  /** A metadata entry of the Open, Headers or End being read, within the caps. */
  private metadata(end: number): MetadataEntry {
    this.metadataEntries++;
    this.metadataBytes += end - this.pos;
    if (this.metadataEntries > MAX_METADATA_ENTRIES) {
      throw new WireFormatError(`more than ${MAX_METADATA_ENTRIES} metadata entries`);
    }
    if (this.metadataBytes > MAX_METADATA_BYTES) {
      throw new WireFormatError(`metadata larger than ${MAX_METADATA_BYTES} bytes`);
    }
    return this.entry(end);
  }

  private entry(end: number): MetadataEntry {
    const entry: MetadataEntry = {
      $typeName: "mqrpc.v1.MetadataEntry",
      key: "",
      value: { case: undefined },
    };
    while (this.pos < end) {
      const t = this.tag();
      const field = t >>> 3;
      const wire = t & 7;
      if (field === 1) entry.key = this.string(wire);
      else if (field === 2) entry.value = { case: "text", value: this.string(wire) };
      else if (field === 3) entry.value = { case: "binary", value: this.bytes(wire) };
      else this.skip(wire);
    }
    this.checkEnd(end);
    return entry;
  }

  /** A message without fields (HalfClose, Ping); unknown fields are skipped. */
  private empty<T>(typeName: string, wire: number): T {
    const end = this.len(wire);
    while (this.pos < end) this.skip(this.tag() & 7);
    this.checkEnd(end);
    return { $typeName: typeName } as T;
  }

  /** A field tag: field number << 3 | wire type. */
  private tag(): number {
    const t = this.varint();
    if (t >>> 3 === 0) throw new WireFormatError(`illegal tag: field number 0 at byte ${this.pos}`);
    return t;
  }

  /** Reads a length prefix and returns where the nested message ends. */
  private len(wire: number): number {
    this.expect(wire, WIRE_LEN);
    const length = this.varint();
    const end = this.pos + length;
    if (end > this.buf.byteLength) throw new WireFormatError("premature end of data");
    return end;
  }

  private bytes(wire: number): Uint8Array {
    const end = this.len(wire);
    const b = this.buf.subarray(this.pos, end);
    this.pos = end;
    return b;
  }

  private string(wire: number): string {
    const end = this.len(wire);
    const buf = this.buf;
    let s = "";
    if (end - this.pos <= 32) {
      let ascii = true;
      for (let i = this.pos; i < end; i++) {
        const c = buf[i] as number;
        if (c >= 0x80) {
          ascii = false;
          break;
        }
        s += String.fromCharCode(c);
      }
      if (ascii) {
        this.pos = end;
        return s;
      }
    }
    s = textDecoder.decode(buf.subarray(this.pos, end));
    this.pos = end;
    return s;
  }

  private uint32(wire: number): number {
    this.expect(wire, WIRE_VARINT);
    return this.varint();
  }

  private bool(wire: number): boolean {
    return this.uint32(wire) !== 0;
  }

  /** A varint, truncated to its low 32 bits as protobuf does for uint32. */
  private varint(): number {
    const buf = this.buf;
    let result = 0;
    for (let shift = 0; shift < 70; shift += 7) {
      if (this.pos >= buf.byteLength) throw new WireFormatError("premature end of data");
      const b = buf[this.pos++] as number;
      if (shift < 32) result |= (b & 0x7f) << shift;
      if (b < 0x80) return result >>> 0;
    }
    throw new WireFormatError("invalid varint");
  }

  private skip(wire: number): void {
    switch (wire) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_I64:
        this.advance(8);
        return;
      case WIRE_LEN:
        this.pos = this.len(wire);
        return;
      case WIRE_I32:
        this.advance(4);
        return;
      default:
        throw new WireFormatError(`cannot skip wire type ${wire}`);
    }
  }

  private advance(n: number): void {
    if (this.pos + n > this.buf.byteLength) throw new WireFormatError("premature end of data");
    this.pos += n;
  }

  private expect(wire: number, expected: number): void {
    if (wire !== expected) {
      throw new WireFormatError(`wire type ${wire} where ${expected} was expected`);
    }
  }

  private checkEnd(end: number): void {
    if (this.pos !== end) throw new WireFormatError("a field overruns its enclosing message");
  }
}
