/**
 * A child process that reports JSON lines on stdout and takes command
 * lines on stdin: the tests' child servers (child-server-process.ts), the
 * gateway tests' upstream servers and gateways, the bridge tests' peers.
 *
 * Never leaving a child running: each child exits when its stdin reaches
 * EOF, which happens however this process ends (vitest's SIGTERM to a
 * worker, a crash); on a normal exit every child still running also gets
 * SIGKILL.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The repository's root: where the TypeScript children run, so that tsx finds its config. */
const REPO = fileURLToPath(new URL("../../", import.meta.url));

// One registry and one exit hook per process, however many test files
// load this module in the worker.
const runningKey = Symbol.for("mqrpc.test.line-children");
const running: Set<ChildProcessWithoutNullStreams> =
  ((globalThis as Record<symbol, unknown>)[runningKey] as
    | Set<ChildProcessWithoutNullStreams>
    | undefined) ?? installRegistry();

function installRegistry(): Set<ChildProcessWithoutNullStreams> {
  const set = new Set<ChildProcessWithoutNullStreams>();
  (globalThis as Record<symbol, unknown>)[runningKey] = set;
  process.once("exit", () => {
    for (const child of set) child.kill("SIGKILL");
  });
  return set;
}

/** A running child and the events (`E`, one JSON line each) it printed. */
export class LineChild<E> {
  readonly events: E[] = [];
  private readonly waiters = new Set<() => void>();
  private readonly exited: Promise<void>;
  /** Lines of stdout that are not JSON, then stderr: the last 8,000 characters. */
  private tail = "";

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    readonly label: string,
  ) {
    running.add(child);
    this.exited = new Promise((resolve) => {
      child.once("exit", () => {
        running.delete(child);
        resolve();
        this.wake();
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
          this.tail += `${line}\n`;
        }
      }
      this.wake();
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      this.tail = (this.tail + chunk).slice(-8000);
    });
    // EPIPE after a kill is expected.
    child.stdin.on("error", () => {});
  }

  /** Spawns `command args` in `cwd`; `label` names the child in errors. */
  static spawn<E>(command: string, args: string[], cwd: string, label: string): LineChild<E> {
    return new LineChild<E>(spawn(command, args, { cwd, stdio: ["pipe", "pipe", "pipe"] }), label);
  }

  /**
   * Spawns the TypeScript file `script` (`node --import tsx`, in the
   * repository's root, after `nodeOptions`) with `config` as JSON in its
   * one argument.
   */
  static tsx<E>(script: string, config: unknown, label: string, nodeOptions: string[] = []) {
    return LineChild.spawn<E>(
      process.execPath,
      [...nodeOptions, "--import", "tsx", script, JSON.stringify(config)],
      REPO,
      label,
    );
  }

  /** The child's process id, -1 when it did not start. */
  get pid(): number {
    return this.child.pid ?? -1;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** What the child wrote that is not an event: the last 8,000 characters of its stderr and stray stdout. */
  get output(): string {
    return this.tail;
  }

  /** A mark for {@link until}: events from now on. */
  mark(): number {
    return this.events.length;
  }

  /**
   * Resolves with the first event (from `from`, a {@link mark}) that
   * satisfies `predicate`; rejects, with the child's output, when the child
   * exits first or, when `ms` is given, after `ms`.
   */
  until(predicate: (e: E) => boolean, ms?: number, from = 0): Promise<E> {
    return new Promise((resolve, reject) => {
      const timer =
        ms === undefined
          ? undefined
          : setTimeout(() => {
              this.waiters.delete(check);
              reject(
                new Error(
                  `${this.label}: no such event within ${ms} ms; events: ${JSON.stringify(this.events.slice(from))}\n--- output ---\n${this.tail}`,
                ),
              );
            }, ms);
      const check = () => {
        const found = this.events.slice(from).find(predicate);
        if (found !== undefined || !this.alive) {
          this.waiters.delete(check);
          clearTimeout(timer);
          if (found !== undefined) resolve(found);
          else reject(new Error(`${this.label} exited\n--- output ---\n${this.tail}`));
        }
      };
      this.waiters.add(check);
      check();
    });
  }

  /**
   * Resolves at the child's next event or its exit, for a test that waits
   * on a condition over several children's events.
   */
  nextEvent(): Promise<void> {
    if (!this.alive) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        this.waiters.delete(wake);
        resolve();
      };
      this.waiters.add(wake);
    });
  }

  /** Writes a command line to the child's stdin. */
  send(line: string): void {
    this.child.stdin.write(`${line}\n`);
  }

  /** SIGKILL: the child dies with its connections open, as in a crash. Waits for the exit. */
  async kill(): Promise<void> {
    if (this.alive) this.child.kill("SIGKILL");
    await this.exited;
  }

  /** Waits for the exit (after a command that ends the child). */
  async exit(): Promise<void> {
    await this.exited;
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }
}
