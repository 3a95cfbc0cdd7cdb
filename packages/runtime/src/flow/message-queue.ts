/**
 * The hand-off between frames arriving from MQTT and the code that consumes
 * messages (a handler reading requests, a caller reading responses). Its size
 * is bounded by the flow-control window the receiver advertised, not here.
 */
export class MessageQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private head = 0;
  private waiter:
    | { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void }
    | undefined;
  private ended = false;
  private error: { reason: unknown } | undefined;
  private iterated = false;

  /**
   * @param onTake called after the consumer takes an item, so the receiver
   * can return flow-control credit.
   * @param onReturn called when the consumer stops iterating early.
   */
  constructor(
    private readonly onTake: (item: T) => void = () => {},
    private readonly onReturn: () => void = () => {},
  ) {}

  /** Items waiting for the consumer. */
  get length(): number {
    return this.items.length - this.head;
  }

  /** Adds an item; ignored once the queue has ended. */
  push(item: T): void {
    if (this.ended) return;
    const waiter = this.waiter;
    if (waiter !== undefined) {
      this.waiter = undefined;
      this.onTake(item);
      waiter.resolve({ done: false, value: item });
      return;
    }
    this.items.push(item);
  }

  /** Ends the stream after the queued items. */
  close(): void {
    if (this.ended) return;
    this.ended = true;
    this.settleWaiter();
  }

  /** Ends the stream with an error once the queued items are taken. */
  fail(reason: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.error = { reason };
    this.settleWaiter();
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.iterated) {
      throw new Error("a message stream can be iterated only once");
    }
    this.iterated = true;
    return {
      next: () => this.next(),
      return: (value?: unknown) => {
        this.ended = true;
        this.items.length = 0;
        this.head = 0;
        this.onReturn();
        return Promise.resolve({ done: true, value: value as T });
      },
    };
  }

  private next(): Promise<IteratorResult<T>> {
    if (this.head < this.items.length) {
      const item = this.items[this.head] as T;
      this.items[this.head] = undefined as T;
      this.head++;
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items.splice(0, this.head);
        this.head = 0;
      }
      this.onTake(item);
      return Promise.resolve({ done: false, value: item });
    }
    if (this.error !== undefined) return Promise.reject(this.error.reason);
    if (this.ended) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  private settleWaiter(): void {
    const waiter = this.waiter;
    if (waiter === undefined || this.length > 0) return;
    this.waiter = undefined;
    if (this.error !== undefined) waiter.reject(this.error.reason);
    else waiter.resolve({ done: true, value: undefined });
  }
}
