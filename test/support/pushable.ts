/**
 * An async iterable the test writes to, for lock-step bidi streams and for
 * client streams that must stay open while the test acts; its iterator is
 * a full AsyncIterator, `throw` included.
 */
export class Pushable<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private waiting: ((r: IteratorResult<T>) => void) | undefined;
  private ended = false;

  push(item: T): void {
    const w = this.waiting;
    if (w) {
      this.waiting = undefined;
      w({ done: false, value: item });
    } else {
      this.items.push(item);
    }
  }

  end(): void {
    this.ended = true;
    const w = this.waiting;
    if (w && this.items.length === 0) {
      this.waiting = undefined;
      w({ done: true, value: undefined });
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: () => {
        const item = this.items.shift();
        if (item !== undefined) return Promise.resolve({ done: false, value: item });
        if (this.ended) return Promise.resolve({ done: true, value: undefined });
        return new Promise((resolve) => {
          this.waiting = resolve;
        });
      },
      return: () => {
        this.ended = true;
        return Promise.resolve({ done: true, value: undefined });
      },
      // Connect's HTTP transports (connect-node) want it, to pass an error
      // on to the source: the pushable ends, and the error comes back.
      throw: (e?: unknown) => {
        this.end();
        return Promise.reject(e);
      },
    };
  }
}
