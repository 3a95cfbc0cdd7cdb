/**
 * Request messages handed to a call one by one, as they are pushed: the
 * ingress's reflection calls and the gateway's reflection of its upstreams
 * exchange requests and answers in lock step through one.
 */

/** Request messages handed to a raw call one by one; its end is the half-close. */
export class RequestChannel implements AsyncIterable<Uint8Array> {
  private readonly queue: Uint8Array[] = [];
  private ended = false;
  private wake: (() => void) | undefined;

  /** Queues `message`; the call takes it when it asks for the next one. */
  push(message: Uint8Array): void {
    this.queue.push(message);
    this.wake?.();
  }

  /** Ends the requests (the half-close) once the queued ones are taken. */
  end(): void {
    this.ended = true;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    for (;;) {
      const next = this.queue.shift();
      if (next !== undefined) {
        yield next;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = undefined;
    }
  }
}
