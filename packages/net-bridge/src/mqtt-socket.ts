/**
 * The socket of a byte-stream connection over MQTT: a `stream.Duplex` that
 * behaves like a `net.Socket` to the code that uses it. It only buffers:
 * writes become the messages of the connection's mqrpc call (each at most
 * one publish of bytes, pieces of several writes together) as the call's
 * flow control takes them, and messages of the call become reads as the
 * reader asks for them. The call itself is the business of a driver
 * (connect.ts for the caller's side, listener.ts for the server's).
 *
 * Closing follows TCP: `end()` sends end-of-stream after the bytes written
 * (the other direction keeps flowing); `destroy()` without an error closes
 * gracefully (bytes already written, then end-of-stream; whatever the peer
 * sends afterwards resets the connection, as data to a closed TCP socket
 * does); `destroy(err)`, `resetAndDestroy()` or destroying with unread data
 * resets it: the peer's socket fails with ECONNRESET.
 */
import { Duplex } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import { decodeTunnelMessage } from "./tunnel-message.js";

/**
 * A piece of the outgoing stream: its bytes (maybe none) as the writes'
 * pieces, not joined (the message encoder copies them once), and whether
 * the stream ends after them.
 */
export interface Segment {
  readonly parts: readonly Uint8Array[];
  readonly size: number;
  readonly end: boolean;
}

/** What a socket tells the call that carries it. */
export interface SocketDriver {
  /**
   * The socket was destroyed. `reset` is the error to reset the peer with,
   * or undefined for a graceful close (the socket keeps sending what was
   * written, then end-of-stream, and keeps reading to see the call end);
   * nothing is asked of the driver when the call was complete already.
   */
  destroyed(reset: Error | undefined): void;
  /** The peer's messages ended normally (the caller's half-close; the server's OK End). */
  incomingDone(): void;
  /** Reading the peer's messages failed: the call ended with `reason`. */
  incomingFailed(reason: unknown): void;
  /** The peer broke the rules of a connection (or sent data to a closed socket): reset with `error`. */
  protocolError(error: ConnectError): void;
}

/** How a socket starts. */
export interface SocketInit {
  readonly allowHalfOpen: boolean;
  /** The most bytes of the stream one message carries. */
  readonly segmentBytes: number;
  readonly connecting: boolean;
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
  readonly readableHighWaterMark?: number | undefined;
  readonly writableHighWaterMark?: number | undefined;
}

/** What a driver does with its socket. */
export interface SocketIo {
  readonly socket: MqttSocket;
  /** The next segment to send, waiting for one; undefined once the socket stopped sending (reset). */
  nextSegment(): Promise<Segment | undefined>;
  /** The next segment if one is ready now. */
  takeSegment(): Segment | undefined;
  /** Whether the whole outgoing stream, end included, was taken. */
  readonly sentEnd: boolean;
  /** Whether the peer's end-of-stream arrived. */
  readonly receivedEnd: boolean;
  /** Reads the peer's messages from `messages` as the reader asks (and `first` now). */
  receive(messages: AsyncIterator<Uint8Array>, first?: Uint8Array): void;
  /** The caller's side: the server accepted the connection. */
  connected(): void;
  /** Destroys the socket with `error` (the call is over; the driver resets nothing). */
  fail(error: Error): void;
  /** The call is over: stop sending and reading. */
  complete(): void;
}

/**
 * A byte-stream connection over MQTT (see the module comment). Made by
 * `connectMqtt` and handed to the `'connection'` listeners of
 * `listenMqtt`; not constructed by applications.
 *
 * Besides the `stream.Duplex` API it has what code written for
 * `net.Socket` uses: `'connect'`/`'ready'` (caller's side), `connecting`,
 * `pending`, `readyState`, `remoteAddress`/`remotePort` (the caller's side:
 * the server id and virtual port; the server's side: the caller's MQTT
 * client key and source port), `localAddress`/`localPort`, `bytesRead`,
 * `bytesWritten`, `setTimeout` (idle timeout, `'timeout'` event),
 * `setNoDelay`, `setKeepAlive`, `ref`, `unref` (accepted: small writes go
 * out at the end of the event-loop turn, heartbeats keep the connection
 * alive, and the MQTT connection holds the process), `destroySoon`,
 * `resetAndDestroy` and `address()`.
 */
export class MqttSocket extends Duplex {
  /** True until the server accepted the connection (caller's side). */
  connecting: boolean;
  /** Caller's side: the server id; server's side: the caller's MQTT client key. */
  readonly remoteAddress: string | undefined;
  /** Caller's side: the virtual port; server's side: the caller's source port. */
  readonly remotePort: number | undefined;
  /** Always `"mqtt"`. */
  readonly remoteFamily = "mqtt";
  /** Server's side: the server id; caller's side: undefined (its client key is the broker's business). */
  readonly localAddress: string | undefined;
  /** Server's side: the virtual port; caller's side: the source port it announced. */
  readonly localPort: number | undefined;
  /** Bytes received. */
  bytesRead = 0;

  readonly #segmentBytes: number;
  #driver: SocketDriver | undefined;
  // Outgoing: accepted writes not yet taken by the call.
  readonly #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  /** The write callback held while more than a segment waits. */
  #heldCallback: ((error?: Error | null) => void) | undefined;
  #finalCallback: ((error?: Error | null) => void) | undefined;
  #writeEnded = false;
  #sentEnd = false;
  #sent = 0;
  #wake: (() => void) | undefined;
  /** Sending stopped for good (reset, or the call is over). */
  #stopped = false;
  // Incoming.
  #incoming: AsyncIterator<Uint8Array> | undefined;
  #pulling = false;
  #incomingOver = false;
  #receivedEnd = false;
  /** Destroyed gracefully while the call goes on: reads are discarded, data resets. */
  #closing = false;
  #complete = false;
  // Idle timeout.
  #timeoutMs = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** @param attach builds the driver from the socket's I/O (called once, at once). */
  constructor(init: SocketInit, attach: (io: SocketIo) => SocketDriver) {
    super({
      allowHalfOpen: init.allowHalfOpen,
      decodeStrings: true,
      ...(init.readableHighWaterMark !== undefined
        ? { readableHighWaterMark: init.readableHighWaterMark }
        : {}),
      ...(init.writableHighWaterMark !== undefined
        ? { writableHighWaterMark: init.writableHighWaterMark }
        : {}),
    });
    this.#segmentBytes = init.segmentBytes;
    this.connecting = init.connecting;
    this.remoteAddress = init.remoteAddress;
    this.remotePort = init.remotePort;
    this.localAddress = init.localAddress;
    this.localPort = init.localPort;
    const socket = this;
    this.#driver = attach({
      socket,
      nextSegment: () => this.#nextSegment(),
      takeSegment: () => this.#take(),
      get sentEnd() {
        return socket.#sentEnd;
      },
      get receivedEnd() {
        return socket.#receivedEnd;
      },
      receive: (messages, first) => this.#receive(messages, first),
      connected: () => this.#connected(),
      fail: (error) => this.#fail(error),
      complete: () => this.#completeCall(),
    });
  }

  /** Bytes handed to the connection's call. */
  get bytesWritten(): number {
    return this.#sent;
  }

  /** Same as {@link connecting}. */
  get pending(): boolean {
    return this.connecting;
  }

  /** `opening`, `open`, `readOnly`, `writeOnly` or `closed`, as `net.Socket` has it. */
  get readyState(): "opening" | "open" | "readOnly" | "writeOnly" | "closed" {
    if (this.connecting) return "opening";
    if (this.readable && this.writable) return "open";
    if (this.readable) return "readOnly";
    if (this.writable) return "writeOnly";
    return "closed";
  }

  /** `{ address, family: "mqtt", port }`: the local side as {@link localAddress} and {@link localPort}. */
  address(): { address: string | undefined; family: "mqtt"; port: number | undefined } {
    return { address: this.localAddress, family: "mqtt", port: this.localPort };
  }

  /**
   * Emits `'timeout'` after `ms` without bytes read or taken for sending (0
   * turns it off), as `net.Socket.setTimeout`; the socket stays open.
   */
  setTimeout(ms: number, callback?: () => void): this {
    if (!Number.isFinite(ms) || ms < 0) {
      throw new RangeError(`setTimeout: ms must be a non-negative number, got ${ms}`);
    }
    this.#timeoutMs = ms;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (callback !== undefined) {
      if (ms === 0) this.removeListener("timeout", callback);
      else this.once("timeout", callback);
    }
    this.#touch();
    return this;
  }

  /** Accepted for `net.Socket` compatibility: small writes go out at the end of the event-loop turn. */
  setNoDelay(_noDelay?: boolean): this {
    return this;
  }

  /** Accepted for `net.Socket` compatibility: the call's heartbeats keep the connection alive. */
  setKeepAlive(_enable?: boolean, _initialDelay?: number): this {
    return this;
  }

  /** Accepted for `net.Socket` compatibility: the MQTT connection decides whether the process stays alive. */
  ref(): this {
    return this;
  }

  /** Accepted for `net.Socket` compatibility (see {@link ref}). */
  unref(): this {
    return this;
  }

  /** Ends the writable side, then destroys the socket once it finished (`net.Socket.destroySoon`). */
  destroySoon(): void {
    if (this.writable) this.end();
    if (this.writableFinished) this.destroy();
    else this.once("finish", () => this.destroy());
  }

  /** Destroys the socket and resets the connection: the peer's socket fails with ECONNRESET. */
  resetAndDestroy(): this {
    if (!this.destroyed) {
      this.#resetOnDestroy = true;
      this.destroy();
    }
    return this;
  }

  #resetOnDestroy = false;

  // ---- stream.Duplex ----------------------------------------------------

  /**
   * `stream.Writable` internals (use `write()`): queues `chunk` for the
   * call; completes at once while at most one message's worth waits,
   * otherwise once the call takes it.
   */
  override _write(
    chunk: Buffer,
    _encoding: BufferEncoding,
    callback: (error?: Error | null) => void,
  ): void {
    this.#accept(chunk);
    this.#acknowledge(callback);
  }

  /** `stream.Writable` internals (use `write()`): {@link _write} for several chunks at once. */
  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    callback: (error?: Error | null) => void,
  ): void {
    for (const { chunk } of chunks) this.#accept(chunk);
    this.#acknowledge(callback);
  }

  /**
   * `stream.Writable` internals (use `end()`): sends end-of-stream after the
   * queued data; completes once the call has taken it (or is over).
   */
  override _final(callback: (error?: Error | null) => void): void {
    this.#writeEnded = true;
    this.#finalCallback = callback;
    this.#wakeSender();
  }

  /** `stream.Readable` internals (use `read()` or `'data'`): resumes reading the peer's messages. */
  override _read(): void {
    if (this.#incoming !== undefined && !this.#pulling) void this.#pull();
  }

  /**
   * `stream.Duplex` internals (use `destroy()` or `resetAndDestroy()`):
   * with an error, or with unread received data, resets the connection;
   * otherwise sends what was written and end-of-stream, discarding what
   * still arrives.
   */
  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    clearTimeout(this.#timer);
    const driver = this.#driver;
    if (this.#complete || driver === undefined) {
      this.#stop();
      callback(error);
      return;
    }
    const reset =
      error ??
      (this.#resetOnDestroy
        ? new Error("the socket was reset")
        : this.readableLength > 0 && !this.#receivedEnd
          ? new Error("the socket was closed with unread data")
          : undefined);
    if (reset !== undefined) {
      this.#stop();
    } else {
      // Graceful: what was written goes out, then end-of-stream; reading
      // goes on (discarding) until the call ends.
      this.#closing = true;
      this.#writeEnded = true;
      this.#wakeSender();
      void this.#pull();
    }
    driver.destroyed(reset);
    callback(error);
  }

  // ---- outgoing -----------------------------------------------------------

  #accept(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.byteLength;
    this.#wakeSender();
  }

  /** Completes a write at once while at most a segment waits; otherwise once the call takes it. */
  #acknowledge(callback: (error?: Error | null) => void): void {
    if (this.#pendingBytes <= this.#segmentBytes || this.#stopped) callback();
    else this.#heldCallback = callback;
  }

  #wakeSender(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /**
   * The next segment: at once when a whole segment (or the end) is there,
   * otherwise once the current event-loop turn is over, so that the writes
   * a producer makes in one go travel in one message and one publish (the
   * way the runtime batches messages), while a lone write waits for
   * nothing but the end of its turn.
   */
  async #nextSegment(): Promise<Segment | undefined> {
    for (;;) {
      if (this.#stopped) return undefined;
      if (this.#pendingBytes > 0 && this.#pendingBytes < this.#segmentBytes && !this.#writeEnded) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (this.#stopped) return undefined;
      }
      const segment = this.#take();
      if (segment !== undefined) return segment;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
  }

  /** Takes up to a segment of the accepted bytes, with the end of stream when nothing follows. */
  #take(): Segment | undefined {
    if (this.#stopped || this.#sentEnd) return undefined;
    const parts: Uint8Array[] = [];
    let size = 0;
    if (this.#pendingBytes > 0) {
      while (this.#pending.length > 0 && size < this.#segmentBytes) {
        const head = this.#pending[0] as Uint8Array;
        const room = this.#segmentBytes - size;
        if (head.byteLength <= room) {
          this.#pending.shift();
          parts.push(head);
          size += head.byteLength;
        } else {
          parts.push(head.subarray(0, room));
          this.#pending[0] = head.subarray(room);
          size += room;
        }
      }
      this.#pendingBytes -= size;
      this.#sent += size;
      this.#touch();
      const held = this.#heldCallback;
      if (held !== undefined && this.#pendingBytes <= this.#segmentBytes) {
        this.#heldCallback = undefined;
        process.nextTick(held);
      }
    } else if (!this.#writeEnded) {
      return undefined;
    }
    const end = this.#writeEnded && this.#pendingBytes === 0 && this.#heldCallback === undefined;
    if (end) {
      this.#sentEnd = true;
      const final = this.#finalCallback;
      this.#finalCallback = undefined;
      if (final !== undefined) process.nextTick(final);
    }
    return { parts, size, end };
  }

  /** Stops sending for good; a held write callback completes (its bytes are dropped). */
  #stop(): void {
    this.#stopped = true;
    this.#pending.length = 0;
    this.#pendingBytes = 0;
    const held = this.#heldCallback;
    this.#heldCallback = undefined;
    if (held !== undefined) process.nextTick(held);
    this.#wakeSender();
  }

  // ---- incoming -----------------------------------------------------------

  #receive(messages: AsyncIterator<Uint8Array>, first?: Uint8Array): void {
    this.#incoming = messages;
    // Read ahead up to the readable high-water mark, as a kernel buffer
    // does: the peer learns of the reader's room, and the end of the call
    // is seen without waiting for a read.
    if (first !== undefined && !this.#handle(first)) return;
    void this.#pull();
  }

  async #pull(): Promise<void> {
    const messages = this.#incoming;
    if (messages === undefined || this.#pulling || this.#incomingOver) return;
    this.#pulling = true;
    try {
      for (;;) {
        let next: IteratorResult<Uint8Array>;
        try {
          next = await messages.next();
        } catch (e) {
          this.#incomingOver = true;
          if (!this.#complete) this.#driver?.incomingFailed(e);
          return;
        }
        if (next.done === true) {
          this.#incomingOver = true;
          this.#deliverEnd();
          if (!this.#complete) this.#driver?.incomingDone();
          return;
        }
        if (!this.#handle(next.value)) return;
      }
    } finally {
      this.#pulling = false;
    }
  }

  /** Takes one message; false when reading should pause (the reader is full) or stop. */
  #handle(bytes: Uint8Array): boolean {
    let data: Uint8Array;
    let endOfStream: boolean;
    try {
      ({ data, endOfStream } = decodeTunnelMessage(bytes));
    } catch (e) {
      this.#protocolError(
        new ConnectError(
          `malformed mqrpc.v1.TunnelMessage: ${e instanceof Error ? e.message : String(e)}`,
          Code.InvalidArgument,
        ),
      );
      return false;
    }
    let more = true;
    if (data.byteLength > 0) {
      if (this.#receivedEnd) {
        this.#protocolError(
          new ConnectError("protocol error: data after end of stream", Code.InvalidArgument),
        );
        return false;
      }
      this.bytesRead += data.byteLength;
      if (this.#closing) {
        this.#protocolError(
          new ConnectError("data arrived after the socket was closed", Code.Aborted),
        );
        return false;
      }
      this.#touch();
      more = this.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    }
    if (endOfStream) this.#deliverEnd();
    return more || this.#receivedEnd || this.#closing;
  }

  #deliverEnd(): void {
    if (this.#receivedEnd) return;
    this.#receivedEnd = true;
    if (!this.destroyed) this.push(null);
  }

  #protocolError(error: ConnectError): void {
    this.#incomingOver = true;
    if (!this.#complete) this.#driver?.protocolError(error);
  }

  // ---- lifecycle ------------------------------------------------------

  #connected(): void {
    if (!this.connecting || this.destroyed) return;
    this.connecting = false;
    this.#touch();
    this.emit("connect");
    this.emit("ready");
  }

  #fail(error: Error): void {
    this.#completeCall();
    if (!this.destroyed) this.destroy(error);
  }

  #completeCall(): void {
    if (this.#complete) return;
    this.#complete = true;
    this.#incomingOver = true;
    this.#stop();
    const final = this.#finalCallback;
    this.#finalCallback = undefined;
    if (final !== undefined) process.nextTick(final);
  }

  #touch(): void {
    if (this.#timeoutMs === 0 || this.destroyed) {
      if (this.#timer !== undefined) clearTimeout(this.#timer);
      this.#timer = undefined;
      return;
    }
    if (this.#timer !== undefined) {
      this.#timer.refresh();
      return;
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (!this.destroyed) this.emit("timeout");
    }, this.#timeoutMs);
    this.#timer.unref();
  }
}
