/**
 * The processes a benchmark runs besides the measuring one (a broker, or
 * the server side of a contender), started from a peer script: peer.ts,
 * gateway-peer.ts or bridge-peer.ts. Each is forked with its role and a JSON
 * config in argv, reports `{ ready, ... }` over IPC, answers "rss" with
 * `{ rss }` and exits on "stop".
 */
import { type ChildProcess, fork } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** A running peer process. */
export interface Peer {
  /** What the peer reported with `ready` (a port, a URL...). */
  readonly info: Record<string, unknown>;
  /** The peer's process id (the node process itself: tsx is loaded with `--import`). */
  readonly pid: number;
  /** The peer's resident set size, bytes. */
  rss(): Promise<number>;
  /** Tells the peer to stop; resolves when it has exited. */
  stop(): Promise<void>;
}

/** The scripts peers run, next to this file. */
export type PeerScript = "peer.ts" | "gateway-peer.ts" | "bridge-peer.ts";

let cpuProfileDir: string | undefined;
let profiles = 0;

/**
 * From now on, peers write V8 CPU profiles (`node --cpu-prof`) when they
 * exit, into `dir/<role>-<n>/`: one file per thread, named by Node
 * (`CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile`; the main thread is
 * thread 0, the others are module loader workers).
 */
export function profilePeers(dir: string): void {
  cpuProfileDir = dir;
}

/** Forks `script` in `role` with `config`; resolves once it reports ready, rejects if it exits first. */
export async function startPeer(
  role: string,
  config: object = {},
  script: PeerScript = "peer.ts",
): Promise<Peer> {
  const child: ChildProcess = fork(
    fileURLToPath(new URL(`./${script}`, import.meta.url)),
    [role, JSON.stringify(config)],
    {
      execArgv: [
        "--import",
        "tsx",
        ...(cpuProfileDir === undefined
          ? []
          : ["--cpu-prof", `--cpu-prof-dir=${join(cpuProfileDir, `${role}-${++profiles}`)}`]),
      ],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    },
  );
  const info = await new Promise<Record<string, unknown>>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`${role} exited with ${code}`)));
    child.on("message", (m) => {
      if ((m as { ready?: boolean }).ready) resolve(m as Record<string, unknown>);
    });
  });
  return {
    info,
    pid: child.pid as number,
    rss: () =>
      new Promise((resolve) => {
        const on = (m: unknown) => {
          const rss = (m as { rss?: number }).rss;
          if (rss !== undefined) {
            child.off("message", on);
            resolve(rss);
          }
        };
        child.on("message", on);
        child.send("rss");
      }),
    stop: () =>
      new Promise((resolve) => {
        child.removeAllListeners("exit");
        child.once("exit", () => resolve());
        child.send("stop");
      }),
  };
}
