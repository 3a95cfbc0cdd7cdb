/**
 * Runs a broker binary as a child process on a port of ours: waits until the
 * port accepts connections, fails with the broker's own output if it exits
 * first, and stops it on request or when the test process exits.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { connect } from "node:net";

const running = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** Whether `binary` exists (absolute path) on this machine. */
export function binaryPresent(binary: string): boolean {
  return existsSync(binary);
}

/** A broker child process. */
export interface BrokerProcess {
  readonly pid: number;
  /** SIGTERM, then wait for the exit (SIGKILL after 5 s). */
  stop(): Promise<void>;
}

/** Starts `binary args` and resolves once `port` on 127.0.0.1 accepts connections. */
export async function startBrokerProcess(
  binary: string,
  args: string[],
  port: number,
): Promise<BrokerProcess> {
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
  let output = "";
  child.stdout?.on("data", (d: Buffer) => {
    output = (output + d.toString()).slice(-4000);
  });
  child.stderr?.on("data", (d: Buffer) => {
    output = (output + d.toString()).slice(-4000);
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => resolve(code)),
  );
  exited.then(() => running.delete(child));
  const deadline = Date.now() + 15_000;
  for (let delay = 10; ; delay = Math.min(delay * 2, 200)) {
    if (child.exitCode !== null) {
      throw new Error(
        `${binary} exited with ${child.exitCode} before listening on ${port}:\n${output}`,
      );
    }
    if (await canConnect(port)) break;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`${binary} did not listen on ${port} within 15 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, delay));
  }
  return {
    pid: child.pid ?? -1,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}
