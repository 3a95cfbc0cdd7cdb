/**
 * Writes `mqrpc.v1.Frame` in protobuf binary form without reflection: every
 * publish carries one frame, so this is on the path of every call. Sizes are
 * measured first and the frame is written into one exactly sized array, with
 * fields in field-number order and proto3 defaults omitted: the bytes equal
 * protobuf-es `toBinary` output (a property test holds the two together).
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { FrameSchema } from "../gen/mqrpc/v1/wire_pb.js";

/** What a frame is built from: a protobuf-es init shape of `Frame`. */
export type FrameFields = MessageInitShape<typeof FrameSchema>;

type Kind = NonNullable<FrameFields["kind"]>;
type EntryInit = {
  key?: string | undefined;
  value?: { case?: string | undefined; value?: unknown } | undefined;
};
type StatusInit = {
  code?: number | undefined;
  message?: string | undefined;
  details?: Array<{ type?: string | undefined; value?: Uint8Array | undefined }> | undefined;
};

/** The protocol version this runtime speaks (docs/PROTOCOL.md section 19). */
export const PROTOCOL_VERSION = 2;

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const tag = (field: number, wire: number) => (field << 3) | wire;

/**
 * Encodes a frame; throws a RangeError for a number outside uint32.
 * `version`, when given, replaces the frame's own version field.
 */
export function writeFrame(frame: FrameFields, version?: number): Uint8Array {
  const out = new Writer(sizeOfFrame(frame, version));
  out.frame(frame, version);
  return out.bytes;
}

/**
 * Wraps already encoded frames of different calls in one `Coalesced` frame
 * of this protocol version, copying each once.
 */
export function writeCoalesced(frames: readonly Uint8Array[]): Uint8Array {
  let inner = 0;
  for (const f of frames) inner += lenField(f.byteLength);
  const out = new Writer(varintField(PROTOCOL_VERSION) + lenField(inner));
  out.coalesced(frames, inner, PROTOCOL_VERSION);
  return out.bytes;
}

function varintSize(v: number): number {
  return v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : 5;
}

function uint32(v: number | undefined): number {
  const n = v ?? 0;
  if (n >>> 0 !== n) throw new RangeError(`invalid uint32: ${n}`);
  return n;
}

/** UTF-8 length of a string, without encoding it. */
function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 2;
        i++;
      } else n += 2;
    } else n += 2;
  }
  return n;
}

const lenField = (size: number) => 1 + varintSize(size) + size;
const varintField = (v: number) => (v === 0 ? 0 : 1 + varintSize(uint32(v)));
const stringField = (s: string | undefined) => (s ? lenField(utf8Length(s)) : 0);
const bytesField = (b: Uint8Array | undefined) =>
  b && b.byteLength > 0 ? lenField(b.byteLength) : 0;

function sizeOfEntry(e: EntryInit): number {
  let n = stringField(e.key);
  const v = e.value;
  if (v?.case === "text") n += lenField(utf8Length((v.value as string | undefined) ?? ""));
  else if (v?.case === "binary")
    n += lenField((v.value as Uint8Array | undefined)?.byteLength ?? 0);
  return n;
}

function sizeOfEntries(entries: readonly EntryInit[] | undefined): number {
  let n = 0;
  if (entries) for (const e of entries) n += lenField(sizeOfEntry(e));
  return n;
}

function sizeOfStatus(s: StatusInit): number {
  let n = varintField(s.code ?? 0) + stringField(s.message);
  if (s.details)
    for (const d of s.details) n += lenField(stringField(d.type) + bytesField(d.value));
  return n;
}

function sizeOfKind(kind: Kind): number {
  switch (kind.case) {
    case "open": {
      const o = kind.value;
      return (
        varintField(o.timeoutMs ?? 0) +
        sizeOfEntries(o.headers) +
        (o.message !== undefined ? lenField(o.message.byteLength) : 0) +
        (o.halfClose ? 2 : 0) +
        varintField(o.window ?? 0) +
        varintField(o.heartbeatMs ?? 0) +
        varintField(o.session ?? 0)
      );
    }
    case "headers": {
      const h = kind.value;
      return (
        sizeOfEntries(h.headers) +
        stringField(h.instance) +
        varintField(h.window ?? 0) +
        varintField(h.incarnation ?? 0)
      );
    }
    case "message":
      return kind.value.byteLength;
    case "batch": {
      let n = 0;
      for (const m of kind.value.messages ?? []) n += lenField(m.byteLength);
      return n;
    }
    case "chunk": {
      const c = kind.value;
      return varintField(c.totalSize ?? 0) + varintField(c.offset ?? 0) + bytesField(c.data);
    }
    case "end": {
      const e = kind.value;
      return (
        (e.status !== undefined ? lenField(sizeOfStatus(e.status)) : 0) +
        sizeOfEntries(e.trailers) +
        sizeOfEntries(e.headers) +
        (e.message !== undefined ? lenField(e.message.byteLength) : 0) +
        (e.ack ? 2 : 0)
      );
    }
    case "cancel":
      return varintField(kind.value.code ?? 0);
    case "credit": {
      const c = kind.value;
      return varintField(c.limit ?? 0) + varintField(c.received ?? 0) + (c.resend ? 2 : 0);
    }
    case "pong":
      return varintField(kind.value.incarnation ?? 0) + (kind.value.unknown ? 2 : 0);
    case "coalesced": {
      let n = 0;
      for (const inner of kind.value.frames ?? []) n += lenField(sizeOfFrame(inner));
      return n;
    }
    default:
      // HalfClose and Ping have no fields.
      return 0;
  }
}

const KIND_FIELD: Record<string, number> = {
  open: 4,
  headers: 5,
  message: 6,
  batch: 7,
  chunk: 8,
  halfClose: 9,
  end: 10,
  cancel: 11,
  credit: 12,
  ping: 13,
  pong: 14,
  coalesced: 15,
};

function sizeOfFrame(f: FrameFields, version?: number): number {
  let n =
    varintField(version ?? f.version ?? 0) + varintField(f.callId ?? 0) + varintField(f.seq ?? 0);
  const kind = f.kind;
  if (kind?.case !== undefined) n += lenField(sizeOfKind(kind as Kind));
  return n;
}

const textEncoder = new TextEncoder();

const NodeBuffer = (globalThis as { Buffer?: { allocUnsafe(size: number): Uint8Array } }).Buffer;

/**
 * Memory for one frame, not zeroed: the writer fills every byte it
 * measured. On Node, `Buffer.allocUnsafe` carves small frames from a shared
 * pool (a typed array over 64 bytes gets its own off-heap store, which
 * costs V8 about half a microsecond to allocate and free) and skips zeroing
 * large ones (a 64 KiB message frame zeroed first costs as much as copying
 * its payload in). Elsewhere a plain, zeroed Uint8Array.
 */
function allocate(size: number): Uint8Array {
  return NodeBuffer !== undefined ? NodeBuffer.allocUnsafe(size) : new Uint8Array(size);
}

class Writer {
  readonly bytes: Uint8Array;
  private pos = 0;

  constructor(size: number) {
    this.bytes = allocate(size);
  }

  frame(f: FrameFields, version?: number): void {
    this.varintField(1, version ?? f.version ?? 0);
    this.varintField(2, f.callId ?? 0);
    this.varintField(3, f.seq ?? 0);
    const kind = f.kind as Kind | undefined;
    if (kind?.case === undefined) return;
    this.varint(tag(KIND_FIELD[kind.case] as number, WIRE_LEN));
    this.varint(sizeOfKind(kind));
    this.kind(kind);
  }

  coalesced(frames: readonly Uint8Array[], innerSize: number, version: number): void {
    this.varintField(1, version);
    this.varint(tag(KIND_FIELD.coalesced as number, WIRE_LEN));
    this.varint(innerSize);
    for (const f of frames) this.bytesAlways(1, f);
  }

  private kind(kind: Kind): void {
    switch (kind.case) {
      case "open": {
        const o = kind.value;
        this.varintField(1, o.timeoutMs ?? 0);
        this.entries(2, o.headers);
        if (o.message !== undefined) this.bytesAlways(3, o.message);
        if (o.halfClose) this.varintAlways(4, 1);
        this.varintField(5, o.window ?? 0);
        this.varintField(6, o.heartbeatMs ?? 0);
        this.varintField(7, o.session ?? 0);
        return;
      }
      case "headers": {
        const h = kind.value;
        this.entries(1, h.headers);
        this.stringField(2, h.instance);
        this.varintField(3, h.window ?? 0);
        this.varintField(4, h.incarnation ?? 0);
        return;
      }
      case "message":
        this.raw(kind.value);
        return;
      case "batch":
        for (const m of kind.value.messages ?? []) this.bytesAlways(1, m);
        return;
      case "chunk": {
        const c = kind.value;
        this.varintField(1, c.totalSize ?? 0);
        this.varintField(2, c.offset ?? 0);
        if (c.data && c.data.byteLength > 0) this.bytesAlways(3, c.data);
        return;
      }
      case "end": {
        const e = kind.value;
        if (e.status !== undefined) {
          const s = e.status as StatusInit;
          this.varint(tag(1, WIRE_LEN));
          this.varint(sizeOfStatus(s));
          this.varintField(1, s.code ?? 0);
          this.stringField(2, s.message);
          for (const d of s.details ?? []) {
            this.varint(tag(3, WIRE_LEN));
            this.varint(stringField(d.type) + bytesField(d.value));
            this.stringField(1, d.type);
            if (d.value && d.value.byteLength > 0) this.bytesAlways(2, d.value);
          }
        }
        this.entries(2, e.trailers);
        this.entries(3, e.headers);
        if (e.message !== undefined) this.bytesAlways(4, e.message);
        if (e.ack) this.varintAlways(5, 1);
        return;
      }
      case "cancel":
        this.varintField(1, kind.value.code ?? 0);
        return;
      case "credit": {
        const c = kind.value;
        this.varintField(1, c.limit ?? 0);
        this.varintField(2, c.received ?? 0);
        if (c.resend) this.varintAlways(3, 1);
        return;
      }
      case "pong":
        this.varintField(1, kind.value.incarnation ?? 0);
        if (kind.value.unknown) this.varintAlways(2, 1);
        return;
      case "coalesced":
        for (const inner of kind.value.frames ?? []) {
          this.varint(tag(1, WIRE_LEN));
          this.varint(sizeOfFrame(inner));
          this.frame(inner);
        }
        return;
      default:
        return;
    }
  }

  private entries(field: number, entries: readonly EntryInit[] | undefined): void {
    if (!entries) return;
    for (const e of entries) {
      this.varint(tag(field, WIRE_LEN));
      this.varint(sizeOfEntry(e));
      this.stringField(1, e.key);
      const v = e.value;
      if (v?.case === "text") this.stringAlways(2, (v.value as string | undefined) ?? "");
      else if (v?.case === "binary")
        this.bytesAlways(3, (v.value as Uint8Array | undefined) ?? new Uint8Array(0));
    }
  }

  private varintField(field: number, v: number): void {
    if (v !== 0) this.varintAlways(field, v);
  }

  private varintAlways(field: number, v: number): void {
    this.varint(tag(field, WIRE_VARINT));
    this.varint(uint32(v));
  }

  private stringField(field: number, s: string | undefined): void {
    if (s) this.stringAlways(field, s);
  }

  private stringAlways(field: number, s: string): void {
    this.varint(tag(field, WIRE_LEN));
    const length = utf8Length(s);
    this.varint(length);
    if (length === s.length) {
      const b = this.bytes;
      let p = this.pos;
      for (let i = 0; i < s.length; i++) b[p++] = s.charCodeAt(i);
      this.pos = p;
    } else {
      textEncoder.encodeInto(s, this.bytes.subarray(this.pos, this.pos + length));
      this.pos += length;
    }
  }

  private bytesAlways(field: number, b: Uint8Array): void {
    this.varint(tag(field, WIRE_LEN));
    this.varint(b.byteLength);
    this.raw(b);
  }

  private raw(b: Uint8Array): void {
    this.bytes.set(b, this.pos);
    this.pos += b.byteLength;
  }

  private varint(v: number): void {
    const b = this.bytes;
    while (v > 0x7f) {
      b[this.pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    b[this.pos++] = v;
  }
}
