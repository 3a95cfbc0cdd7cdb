/**
 * Runs the BUILT `mqrpc` bin (packages/cli/bin/mqrpc.js on dist/, as a user
 * runs it) as a child process, and reads what it prints. Every process a
 * test starts is killed in teardown ({@link CliProcess.killAll}) and when
 * the test process exits.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { BrokerTarget } from "../../../../test/brokers/targets.js";

/** The bin a user runs: packages/cli/bin/mqrpc.js. */
export const CLI_BIN = fileURLToPath(new URL("../../bin/mqrpc.js", import.meta.url));
const DIST = fileURLToPath(new URL("../../dist/main.js", import.meta.url));
/** The repository root: the working directory of every run (for `--schema proto`). */
export const REPO = fileURLToPath(new URL("../../../../", import.meta.url));

const running = new Set<CliProcess>();
process.once("exit", () => {
  for (const p of running) p.child.kill("SIGKILL");
});

/** The connection options that select `target`. */
export function brokerArgs(target: BrokerTarget): string[] {
  const version = (target.protocolVersion ?? target.mqttOptions.protocolVersion) === 5 ? "5" : "3";
  return ["--mqtt", target.url, "--mqtt-version", version];
}

/** How a run ended. */
export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** One running `mqrpc`. */
export class CliProcess {
  stdout = "";
  stderr = "";
  readonly exited: Promise<CliResult>;
  private readonly waiters = new Set<() => void>();

  private constructor(
    readonly child: ChildProcessWithoutNullStreams,
    readonly args: readonly string[],
  ) {
    running.add(this);
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      this.stdout += chunk;
      this.wake();
    });
    child.stderr.on("data", (chunk: string) => {
      this.stderr += chunk;
      this.wake();
    });
    child.stdin.on("error", () => {});
    this.exited = new Promise((resolve) => {
      child.once("close", (code, signal) => {
        running.delete(this);
        resolve({ code, signal, stdout: this.stdout, stderr: this.stderr });
        this.wake();
      });
    });
  }

  /** Starts `mqrpc <args>` with MQRPC_* variables cleared (plus `env`). */
  static start(args: readonly string[], env: Record<string, string> = {}): CliProcess {
    if (!existsSync(DIST)) {
      throw new Error(`${DIST} is missing: run npm run build first (the tests run the built CLI)`);
    }
    const base = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.startsWith("MQRPC_") || k === "MQRPC_BROKERS"),
    );
    const child = spawn(process.execPath, [CLI_BIN, ...args], {
      cwd: REPO,
      env: { ...base, ...env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    return new CliProcess(child, args);
  }

  /** Kills every process still running (teardown of tests that do not run concurrently). */
  static async killAll(): Promise<void> {
    const all = [...running];
    for (const p of all) p.child.kill("SIGKILL");
    await Promise.all(all.map((p) => p.exited));
  }

  /** Stdout split into complete lines. */
  lines(): string[] {
    const lines = this.stdout.split("\n");
    lines.pop();
    return lines;
  }

  /** Stdout lines parsed as JSON (each must be). */
  jsonLines(): unknown[] {
    return this.lines().map((l) => JSON.parse(l) as unknown);
  }

  /**
   * Resolves with the first stdout line that satisfies `test`; rejects,
   * with what the process printed, when it exits first or after `ms`.
   */
  untilLine(test: (line: string) => boolean, ms = 15_000): Promise<string> {
    return this.until(() => this.lines().find(test), ms, "a matching line");
  }

  /** Resolves once stderr satisfies `test`. */
  untilStderr(test: (stderr: string) => boolean, ms = 15_000): Promise<string> {
    return this.until(() => (test(this.stderr) ? this.stderr : undefined), ms, "stderr");
  }

  private until<T>(probe: () => T | undefined, ms: number, what: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`no ${what} within ${ms} ms`)), ms);
      const check = () => {
        const found = probe();
        if (found !== undefined) return done(undefined, found);
        if (this.child.exitCode !== null || this.child.signalCode !== null) {
          done(
            new Error(`exited (${this.child.exitCode ?? this.child.signalCode}) before ${what}`),
          );
        }
      };
      const done = (error: Error | undefined, value?: T) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        if (error === undefined) resolve(value as T);
        else
          reject(
            new Error(
              `${error.message}: mqrpc ${this.args.join(" ")}\n--- stdout ---\n${this.stdout}\n--- stderr ---\n${this.stderr}`,
            ),
          );
      };
      this.waiters.add(check);
      check();
    });
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  write(text: string): void {
    this.child.stdin.write(text);
  }

  endInput(): void {
    this.child.stdin.end();
  }

  /** SIGKILL unless it has exited; resolves at the exit. */
  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
    await this.exited;
  }

  /** Sends `signal` and waits for the exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<CliResult> {
    this.child.kill(signal);
    return this.exited;
  }
}

/** Runs `mqrpc <args>` to its end, `input` on stdin (closed at once when absent). */
export async function runCli(
  args: readonly string[],
  options: { readonly input?: string | Uint8Array; readonly env?: Record<string, string> } = {},
): Promise<CliResult> {
  const p = CliProcess.start(args, options.env);
  if (options.input !== undefined) p.child.stdin.end(options.input);
  else p.endInput();
  return p.exited;
}
