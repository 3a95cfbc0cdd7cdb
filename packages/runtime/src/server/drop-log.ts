/**
 * Reports dropped input to a logger without letting a peer flood it: at most
 * `perSecond` lines a second, then one line that counts what was left out.
 * Names from the wire (topics) are quoted as JSON strings, so a newline or
 * a control character in one cannot forge a log line.
 */

/** Where dropped input is reported. */
export interface DropLogger {
  warn(message: string): void;
}

/** See the module comment. */
export class DropLog {
  private windowStart = 0;
  private lines = 0;
  private suppressed = 0;

  constructor(
    private readonly logger: DropLogger,
    private readonly prefix: string,
    private readonly perSecond = 10,
    private readonly now: () => number = Date.now,
  ) {}

  /** Logs `message` unless this second's lines are used up. */
  drop(message: string): void {
    const now = this.now();
    if (now - this.windowStart >= 1000) {
      if (this.suppressed > 0) {
        this.logger.warn(
          `${this.prefix}: ${this.suppressed} more dropped frames not logged in the last second`,
        );
      }
      this.windowStart = now;
      this.lines = 0;
      this.suppressed = 0;
    }
    if (this.lines < this.perSecond) {
      this.lines++;
      this.logger.warn(`${this.prefix}: ${message}`);
    } else {
      this.suppressed++;
    }
  }
}

/** A name from the wire, quoted for a log line. */
export function quoted(name: string): string {
  return JSON.stringify(name);
}
