/**
 * Runs bridge-child.ts in a child process, reads its events and kills it.
 * The child exits when its stdin ends, so it never outlives this process;
 * a child still running at exit gets SIGKILL.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { BridgeChildConfig, BridgeChildEvent } from "./bridge-child.js";

const SCRIPT = fileURLToPath(new URL("./bridge-child.ts", import.meta.url));
const REPO = fileURLToPath(new URL("../../../../", import.meta.url));
const running = new Set<ChildProcessWithoutNullStreams>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export class BridgeProcess {
  readonly events: BridgeChildEvent[] = [];
  private readonly waiters = new Set<() => void>();
  private readonly exited: Promise<void>;
  private output = "";

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    running.add(child);
    this.exited = new Promise((resolve) => {
      child.once("exit", () => {
        running.delete(child);
        resolve();
        for (const wake of [...this.waiters]) wake();
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
          this.events.push(JSON.parse(line) as BridgeChildEvent);
        } catch {
          this.output += `${line}\n`;
        }
      }
      for (const wake of [...this.waiters]) wake();
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk: string) => {
      this.output = (this.output + chunk).slice(-8000);
    });
    child.stdin.on("error", () => {});
  }

  /** Starts a child and waits for its first event of `kind`. */
  static async start(
    config: BridgeChildConfig,
    kind: BridgeChildEvent["event"],
  ): Promise<BridgeProcess> {
    const child = spawn(process.execPath, ["--import", "tsx", SCRIPT, JSON.stringify(config)], {
      cwd: REPO,
      stdio: ["pipe", "pipe", "pipe"],
    });
    const process_ = new BridgeProcess(child);
    await process_.until((e) => e.event === kind);
    return process_;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves once an event satisfies `predicate`; rejects if the child exits first. */
  until(predicate: (e: BridgeChildEvent) => boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.events.some(predicate)) {
          this.waiters.delete(check);
          resolve();
        } else if (!this.alive) {
          this.waiters.delete(check);
          reject(new Error(`the bridge child exited\n--- output ---\n${this.output}`));
        }
      };
      this.waiters.add(check);
      check();
    });
  }

  /** SIGKILL, as a crash; waits for the exit. */
  async kill(): Promise<void> {
    if (this.alive) this.child.kill("SIGKILL");
    await this.exited;
  }
}
