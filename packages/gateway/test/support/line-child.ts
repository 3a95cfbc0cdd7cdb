/**
 * A child process that reports JSON lines on stdout and takes commands on
 * stdin, for the gateway tests' upstream servers and gateways.
 *
 * Never leaving a child running: each child exits when its stdin reaches
 * EOF, which happens however this process ends; a normal exit also
 * SIGKILLs every child still running.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";

const running = new Set<ChildProcessWithoutNullStreams>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** A running child and the events it printed. */
export class LineChild<E> {
  readonly events: E[] = [];
  private readonly waiters = new Set<() => void>();
  private readonly exited: Promise<void>;
  private output = "";

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    readonly label: string,
  ) {
    running.add(child);
    this.exited = new Promise((resolve) => {
      child.once("exit", () => {
        running.delete(child);
        resolve();
        for (const w of [...this.waiters]) w();
      });
    });
    let buffered = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      buffered += chunk;
      for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          this.events.push(JSON.parse(line) as E);
        } catch {
          this.output += `${line}\n`;
        }
      }
      for (const w of [...this.waiters]) w();
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      this.output = (this.output + chunk).slice(-8000);
    });
    // EPIPE after a kill is expected.
    child.stdin.on("error", () => {});
  }

  /** Spawns `command args` in `cwd`. */
  static spawn<E>(command: string, args: string[], cwd: string, label: string): LineChild<E> {
    return new LineChild<E>(spawn(command, args, { cwd, stdio: ["pipe", "pipe", "pipe"] }), label);
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** A mark for {@link until}: events from now on. */
  mark(): number {
    return this.events.length;
  }

  /**
   * Resolves with the first event (from `from`, a {@link mark}) that
   * satisfies `predicate`; rejects, with the child's stderr, when the child
   * exits first or after `ms`.
   */
  until(predicate: (e: E) => boolean, ms = 15_000, from = 0): Promise<E> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(
          new Error(
            `${this.label}: no such event within ${ms} ms; events: ${JSON.stringify(this.events.slice(from))}\n--- output ---\n${this.output}`,
          ),
        );
      }, ms);
      const check = () => {
        const found = this.events.slice(from).find(predicate);
        if (found !== undefined || !this.alive) {
          this.waiters.delete(check);
          clearTimeout(timer);
          if (found !== undefined) resolve(found);
          else reject(new Error(`${this.label} exited\n--- output ---\n${this.output}`));
        }
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Writes a command line to the child's stdin. */
  send(line: string): void {
    this.child.stdin.write(`${line}\n`);
  }

  /** SIGKILL, as a crash; waits for the exit. */
  async kill(): Promise<void> {
    if (this.alive) this.child.kill("SIGKILL");
    await this.exited;
  }

  /** Waits for the exit (after a command that ends the child). */
  async exit(): Promise<void> {
    await this.exited;
  }
}
