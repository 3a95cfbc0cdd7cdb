/**
 * Message bodies whose every byte is checkable: byte i of the body with
 * seed s is (i + s) mod 251. The period is prime and not a divisor of any
 * chunk size, so a chunk reassembled at the wrong offset, duplicated or
 * dropped shows as a mismatch, not just as a wrong length. Also the
 * arithmetic of protobuf sizes, to hit exact message sizes.
 */

const PERIOD = 251;
let master = new Uint8Array(0);

function ensureMaster(bytes: number): Uint8Array {
  if (master.byteLength < bytes + PERIOD) {
    const size = Math.max(bytes + PERIOD, master.byteLength * 2, 1 << 20);
    master = new Uint8Array(size);
    for (let i = 0; i < size; i++) master[i] = i % PERIOD;
  }
  return master;
}

/** A body of `size` bytes with the pattern of `seed` (a view: do not modify it). */
export function patterned(size: number, seed = 0): Uint8Array {
  const s = ((seed % PERIOD) + PERIOD) % PERIOD;
  return ensureMaster(size).subarray(s, s + size);
}

/** Whether `bytes` is exactly `patterned(bytes.byteLength, seed)`. */
export function hasPattern(bytes: Uint8Array, seed = 0): boolean {
  const expected = patterned(bytes.byteLength, seed);
  return (
    Buffer.compare(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), expected) === 0
  );
}

/** Bytes of a protobuf varint for `n`. */
export function varintLength(n: number): number {
  let len = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

/** Bytes of a length-delimited field with a one-byte tag (field number below 16). */
export function lenField(contentBytes: number): number {
  return 1 + varintLength(contentBytes) + contentBytes;
}

/**
 * The body length that makes a message `M { ...; Payload payload = n; }` with
 * `Payload { bytes body = 1; }` encode to exactly `target` bytes, where the
 * other fields of M take `otherBytes`. Undefined when no body length does
 * (varint lengths skip a few sizes).
 */
export function bodyLengthFor(target: number, otherBytes = 0): number | undefined {
  const guess = target - otherBytes - 2;
  for (let body = Math.max(0, guess - 12); body <= guess; body++) {
    if (otherBytes + lenField(lenField(body)) === target) return body;
  }
  return undefined;
}

/** The encoded size of such a message with a body of `body` bytes. */
export function encodedSizeFor(body: number, otherBytes = 0): number {
  return otherBytes + lenField(lenField(body));
}
