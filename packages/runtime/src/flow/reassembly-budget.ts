/**
 * The bytes that partly received messages (and frames that arrived ahead of
 * a gap) may hold across the calls of one server or transport, with a share
 * per peer (docs/PROTOCOL.md section 9). Room is reserved as bytes arrive,
 * not as a first chunk announces them, so announcing a large message costs
 * nothing until its bytes come. A receiver that finds no room does not fail
 * the call: it drops the frame and waits its turn here; when room is set
 * aside for it, it asks the sender to send again. So a memory bound turns
 * into backpressure, and one peer cannot take every byte.
 *
 * Reserving piecemeal could deadlock: every message holding part of the
 * budget and each waiting for more. The budget therefore keeps the messages
 * in progress in the order they started and only grants room that leaves
 * each of them able to finish once those before it have finished and given
 * their room back: for the k-th message, `size_k - held_k <= free +
 * held_1 + ... + held_(k-1)`, within the budget and within its owner's share
 * (the banker's algorithm with a fixed order). The oldest message can then
 * always take what it needs, so the budget is never stuck while its senders
 * keep sending; a message whose sender stops holds what it received
 * (at most twice that, see {@link ChunkAssembler}) and, while it is the
 * oldest, keeps up to its remaining size free for itself.
 */

/** A place in the budget's queue; cancel it when the call ends first. */
export interface BudgetWait {
  cancel(): void;
}

interface Waiter {
  readonly reservation: MessageReservation;
  readonly bytes: number;
  readonly granted: () => void;
  cancelled: boolean;
}

/** Why a grant cannot be made now. */
enum Block {
  None,
  /** The budget itself (or room older messages need): later requests wait too. */
  Budget,
  /** Only the owner's share: other owners go ahead. */
  Share,
}

/**
 * Room for one message of a known size, reserved in steps as its bytes
 * arrive. Made by {@link ReassemblyBudget.open}; give it back with
 * {@link MessageReservation.close} when the message is complete or dropped.
 */
export class MessageReservation {
  /** Bytes reserved so far. */
  held = 0;
  /** @internal Whether the message took its place among those in progress (at its first grant). */
  placed = false;
  /** @internal */
  waiter: Waiter | undefined;
  /** @internal */
  closed = false;

  /** @internal use {@link ReassemblyBudget.open} */
  constructor(
    private readonly budget: ReassemblyBudget,
    /** The message's announced size in bytes: the most it may reserve. */
    readonly size: number,
    /** Whose share it draws on. */
    readonly owner: string | undefined,
  ) {}

  /** Bytes still to reserve before the whole message fits. */
  get need(): number {
    return this.size - this.held;
  }

  /**
   * Reserves `bytes` more now, if that keeps every message in progress able
   * to finish and nobody queued ahead is waiting for the same room. Throws
   * (a bug, not a peer's doing) past the message's size or once closed.
   */
  grow(bytes: number): boolean {
    return this.budget.grow(this, bytes);
  }

  /**
   * Queues for `bytes` more: once granted they are reserved and `granted`
   * is called (in a microtask). One wait at a time; a new one replaces it.
   */
  wait(bytes: number, granted: () => void): BudgetWait {
    return this.budget.wait(this, bytes, granted);
  }

  /** Gives back everything reserved and leaves the queue. Idempotent. */
  close(): void {
    this.budget.close(this);
  }
}

/** Per-owner figures of one pass over the messages in progress. */
interface OwnerPass {
  /** Bytes held by this owner's messages passed so far. */
  prefix: number;
  /** The least (prefix before it - need) over this owner's messages passed so far. */
  minRel: number;
}

/** See the module comment. */
export class ReassemblyBudget {
  private used = 0;
  /** Bytes held not for a message in progress (early frames), in total and per owner. */
  private loose = 0;
  private readonly looseByOwner = new Map<string, number>();
  private readonly byOwner = new Map<string, number>();
  /** Messages in progress, in the order they took their place. */
  private readonly inProgress = new Set<MessageReservation>();
  /** Placed messages waiting for more room (each keeps its own waiter). */
  private waitingPlaced = 0;
  /** Messages waiting for their first room, in the order they asked. */
  private waitingToStart: Waiter[] = [];
  /**
   * After the last pass over the waiters: the first one the budget held
   * back (null: one not yet started), so that nothing after it takes room.
   */
  private heldBack: MessageReservation | null | undefined;

  /**
   * @param limit bytes all reassemblies may hold together
   * @param ownerShare bytes the reassemblies of one owner (a caller's client
   *   key on a server) may hold; at least the largest message, or that
   *   message could never be admitted
   */
  constructor(
    readonly limit: number,
    readonly ownerShare: number = limit,
  ) {}

  /** Bytes held now. */
  get inUse(): number {
    return this.used;
  }

  /** Bytes held for `owner`. */
  heldBy(owner: string): number {
    return this.byOwner.get(owner) ?? 0;
  }

  /** Messages in progress: those that hold room, or held some and wait for more. */
  get messages(): number {
    return this.inProgress.size;
  }

  /**
   * Starts a reservation for a message of `size` bytes (at most the limit,
   * and the share when `owner` is given); it holds nothing until it grows.
   */
  open(size: number, owner?: string): MessageReservation {
    if (!Number.isInteger(size) || size < 0 || size > this.limit) {
      throw new Error(`a message of ${size} bytes does not fit a budget of ${this.limit}`);
    }
    if (owner !== undefined && size > this.ownerShare) {
      throw new Error(`a message of ${size} bytes does not fit a share of ${this.ownerShare}`);
    }
    return new MessageReservation(this, size, owner);
  }

  /**
   * Takes `bytes` not tied to a message (frames held ahead of a gap), if
   * they fit now without taking room that a message in progress needs to
   * finish or that a queued receiver waits for. Such bytes may use at most
   * half the budget and half of `owner`'s share, so messages always have
   * room to start.
   */
  reserve(bytes: number, owner?: string): boolean {
    if (bytes <= 0) return true;
    if (this.waiting) {
      this.wake();
      if (this.heldBack !== undefined) return false;
    }
    if (this.loose + bytes > this.limit / 2) return false;
    const ownerLoose = owner === undefined ? 0 : (this.looseByOwner.get(owner) ?? 0);
    if (owner !== undefined && ownerLoose + bytes > this.ownerShare / 2) return false;
    if (this.check(undefined, bytes, owner) !== Block.None) return false;
    this.take(bytes, owner);
    this.loose += bytes;
    if (owner !== undefined) this.looseByOwner.set(owner, ownerLoose + bytes);
    return true;
  }

  /** Gives back `bytes` taken with {@link reserve}, and lets waiters in. */
  release(bytes: number, owner?: string): void {
    if (bytes <= 0) return;
    this.loose = Math.max(0, this.loose - bytes);
    if (owner !== undefined) {
      const left = (this.looseByOwner.get(owner) ?? 0) - bytes;
      if (left > 0) this.looseByOwner.set(owner, left);
      else this.looseByOwner.delete(owner);
    }
    this.give(bytes, owner);
    if (this.waiting) this.wake();
  }

  /** @internal {@link MessageReservation.grow} */
  grow(r: MessageReservation, bytes: number): boolean {
    this.checkRequest(r, bytes);
    if (bytes === 0) return true;
    if (r.waiter !== undefined) return false;
    if (this.waiting) {
      this.wake();
      const first = this.heldBack;
      if (first === null && !r.placed) return false;
      if (first != null && (!r.placed || this.isBefore(first, r))) return false;
    }
    if (this.check(r, bytes, r.owner) !== Block.None) return false;
    this.grant(r, bytes);
    return true;
  }

  /** @internal {@link MessageReservation.wait} */
  wait(r: MessageReservation, bytes: number, granted: () => void): BudgetWait {
    this.checkRequest(r, bytes);
    this.dropWaiter(r);
    const waiter: Waiter = { reservation: r, bytes, granted, cancelled: false };
    r.waiter = waiter;
    if (r.placed) this.waitingPlaced++;
    else this.waitingToStart.push(waiter);
    this.wake();
    return {
      cancel: () => {
        if (r.waiter === waiter) this.dropWaiter(r);
      },
    };
  }

  /** @internal {@link MessageReservation.close} */
  close(r: MessageReservation): void {
    if (r.closed) return;
    this.dropWaiter(r);
    r.closed = true;
    this.inProgress.delete(r);
    const held = r.held;
    r.held = 0;
    if (held > 0) this.give(held, r.owner);
    if (this.waiting) this.wake();
  }

  private get waiting(): boolean {
    return this.waitingPlaced > 0 || this.waitingToStart.length > 0;
  }

  private dropWaiter(r: MessageReservation): void {
    const w = r.waiter;
    if (w === undefined) return;
    w.cancelled = true;
    r.waiter = undefined;
    if (r.placed) this.waitingPlaced--;
    else this.waitingToStart = this.waitingToStart.filter((x) => x !== w);
  }

  private checkRequest(r: MessageReservation, bytes: number): void {
    if (r.closed) throw new Error("the reservation is closed");
    if (!Number.isInteger(bytes) || bytes < 0 || r.held + bytes > r.size) {
      throw new Error(
        `cannot reserve ${bytes} more bytes for a message of ${r.size} bytes holding ${r.held}`,
      );
    }
  }

  private take(bytes: number, owner: string | undefined): void {
    this.used += bytes;
    if (owner !== undefined) this.byOwner.set(owner, (this.byOwner.get(owner) ?? 0) + bytes);
  }

  private give(bytes: number, owner: string | undefined): void {
    this.used = Math.max(0, this.used - bytes);
    if (owner !== undefined) {
      const left = (this.byOwner.get(owner) ?? 0) - bytes;
      if (left > 0) this.byOwner.set(owner, left);
      else this.byOwner.delete(owner);
    }
  }

  private grant(r: MessageReservation, bytes: number): void {
    if (!r.placed) {
      r.placed = true;
      this.inProgress.add(r);
    }
    r.held += bytes;
    this.take(bytes, r.owner);
  }

  /** Whether placed message `a` took its place before `b`. */
  private isBefore(a: MessageReservation, b: MessageReservation): boolean {
    for (const m of this.inProgress) {
      if (m === b) return false;
      if (m === a) return true;
    }
    return false;
  }

  /**
   * Whether `bytes` more for `r` (undefined: bytes tied to no message) keep
   * the budget safe: within the limit and the share, and leaving every
   * message in progress before it (all of them when `r` has not started)
   * able to finish in order. For an unstarted `r`, also whether the whole
   * message fits once every message before it finished.
   */
  private check(
    r: MessageReservation | undefined,
    bytes: number,
    owner: string | undefined,
  ): Block {
    if (r !== undefined && !r.placed) {
      const startBlock = this.startBlock(r);
      if (startBlock !== Block.None) return startBlock;
    }
    let rel = Number.POSITIVE_INFINITY;
    let prefix = 0;
    let ownerRel = Number.POSITIVE_INFINITY;
    let ownerPrefix = 0;
    for (const m of this.inProgress) {
      if (m === r) break;
      rel = Math.min(rel, prefix - m.need);
      prefix += m.held;
      if (owner !== undefined && m.owner === owner) {
        ownerRel = Math.min(ownerRel, ownerPrefix - m.need);
        ownerPrefix += m.held;
      }
    }
    return this.fits(bytes, rel, owner, ownerRel);
  }

  private startBlock(r: MessageReservation): Block {
    if (r.size > this.limit - this.loose) return Block.Budget;
    if (r.owner !== undefined && r.size > this.ownerShare - (this.looseByOwner.get(r.owner) ?? 0)) {
      return Block.Share;
    }
    return Block.None;
  }

  /**
   * With `rel` the least (bytes held before it - bytes it still needs) over
   * the messages that must stay able to finish, and `ownerRel` the same
   * over the owner's: may `bytes` be taken?
   */
  private fits(bytes: number, rel: number, owner: string | undefined, ownerRel: number): Block {
    const free = this.limit - this.used;
    if (bytes > free || bytes > free + rel) return Block.Budget;
    if (owner === undefined) return Block.None;
    const ownerFree = this.ownerShare - this.heldBy(owner);
    if (bytes > ownerFree || bytes > ownerFree + ownerRel) return Block.Share;
    return Block.None;
  }

  /**
   * One pass over the messages in progress, in order, granting waiters as
   * they fit (the oldest can always finish, so it is always served); then
   * the messages waiting to start, in the order they asked. A request the
   * budget holds back holds back those after it; one held back only by
   * its owner's share does not.
   */
  private wake(): void {
    let rel = Number.POSITIVE_INFINITY;
    let prefix = 0;
    const owners = new Map<string, OwnerPass>();
    let heldBack: MessageReservation | null | undefined;
    const pass = (m: MessageReservation) => {
      rel = Math.min(rel, prefix - m.need);
      prefix += m.held;
      if (m.owner !== undefined) {
        const o = owners.get(m.owner) ?? { prefix: 0, minRel: Number.POSITIVE_INFINITY };
        o.minRel = Math.min(o.minRel, o.prefix - m.need);
        o.prefix += m.held;
        owners.set(m.owner, o);
      }
    };
    const serve = (w: Waiter): Block => {
      const r = w.reservation;
      let block = r.placed ? Block.None : this.startBlock(r);
      if (block === Block.None) {
        const ownerRel =
          r.owner === undefined
            ? Number.POSITIVE_INFINITY
            : (owners.get(r.owner)?.minRel ?? Number.POSITIVE_INFINITY);
        block = this.fits(w.bytes, rel, r.owner, ownerRel);
      }
      if (block === Block.None) {
        if (r.placed) this.waitingPlaced--;
        r.waiter = undefined;
        this.grant(r, w.bytes);
        queueMicrotask(w.granted);
      }
      return block;
    };
    if (this.waitingPlaced > 0) {
      for (const m of this.inProgress) {
        const w = m.waiter;
        if (w !== undefined && heldBack === undefined && serve(w) === Block.Budget) heldBack = m;
        pass(m);
      }
    } else {
      for (const m of this.inProgress) pass(m);
    }
    if (this.waitingToStart.length > 0) {
      const still: Waiter[] = [];
      for (const w of this.waitingToStart) {
        if (heldBack !== undefined) {
          still.push(w);
          continue;
        }
        const block = serve(w);
        if (block === Block.None) pass(w.reservation);
        else {
          if (block === Block.Budget) heldBack = null;
          still.push(w);
        }
      }
      this.waitingToStart = still;
    }
    this.heldBack = heldBack;
  }
}
