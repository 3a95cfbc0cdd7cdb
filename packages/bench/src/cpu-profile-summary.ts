/**
 * Summarizes V8 CPU profiles (`.cpuprofile`, as `npm run bench -- --profile`
 * or `node --cpu-prof` write them): the functions with the most self time,
 * as a share of the busy time (samples not in `(idle)`), grouped by
 * function and source location.
 *
 * `npx tsx packages/bench/src/cpu-profile-summary.ts [--top=15] [--by=owner] <file.cpuprofile>...`;
 * `--by=owner` adds the self time up per package (Node's internals per
 * module, npm packages, this repository's packages, native code).
 */
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { fileURLToPath } from "node:url";

/** The parts of a V8 CPU profile this reads. */
interface CpuProfile {
  nodes: Array<{
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
  }>;
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** One function's self time. */
export interface SelfTime {
  /** `file:function`, the file shortened to its package or repository path. */
  readonly location: string;
  /** Self time, ms. */
  readonly ms: number;
  /** Share of the busy time, 0..1. */
  readonly share: number;
}

/** Shortens a script URL: `pkg/file` inside node_modules, the repository path otherwise, `node:x` as is. */
function shortUrl(url: string): string {
  if (url === "") return "";
  const path = url.replace(/^file:\/\//, "");
  const inModules = path.lastIndexOf("/node_modules/");
  if (inModules >= 0) return path.slice(inModules + "/node_modules/".length);
  const inRepo = /\/(packages|test)\/.*$/.exec(path);
  return inRepo ? inRepo[0].slice(1) : path;
}

/**
 * Where a frame's code lives: `node:<module>` for Node's internals, the
 * npm package name, `@mqrpc/<package>` for this repository's packages,
 * `(native)` for V8 and C++ frames without a script, the file otherwise.
 */
function owner(url: string): string {
  if (url === "") return "(native)";
  if (url.startsWith("node:")) {
    // node:internal/http2/core → node:http2; node:events → node:events.
    const path = url.slice("node:".length).split("/");
    return `node:${path[0] === "internal" && path.length > 1 ? path[1] : path[0]}`;
  }
  const file = shortUrl(url);
  const inModules = url.lastIndexOf("/node_modules/");
  if (inModules >= 0) {
    const parts = file.split("/");
    return (parts[0] as string).startsWith("@") ? `${parts[0]}/${parts[1]}` : (parts[0] as string);
  }
  const pkg = /^packages\/([^/]+)\//.exec(file);
  return pkg ? `@mqrpc/${pkg[1]}` : file;
}

/** Self time per function of the profile, most first; the busy and idle time, ms. */
export function selfTimes(
  profile: CpuProfile,
  by: "function" | "owner" = "function",
): {
  rows: SelfTime[];
  busyMs: number;
  idleMs: number;
} {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const totals = new Map<string, number>();
  let idleMs = 0;
  let busyMs = 0;
  // timeDeltas[i] is the time from sample i-1 to sample i: spent where sample i-1 was.
  for (let i = 0; i < profile.samples.length; i++) {
    const ms = (profile.timeDeltas[i + 1] ?? 0) / 1000;
    const node = byId.get(profile.samples[i] as number);
    if (node === undefined) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === "(idle)") {
      idleMs += ms;
      continue;
    }
    busyMs += ms;
    const file = shortUrl(url);
    const key =
      by === "owner" && !functionName.startsWith("(")
        ? owner(url)
        : file === ""
          ? functionName || "(anonymous)"
          : `${file}:${lineNumber + 1}:${functionName || "(anonymous)"}`;
    totals.set(key, (totals.get(key) ?? 0) + ms);
  }
  const rows = [...totals]
    .map(([location, ms]) => ({ location, ms, share: busyMs > 0 ? ms / busyMs : 0 }))
    .sort((a, b) => b.ms - a.ms);
  return { rows, busyMs, idleMs };
}

function main(args: string[]): void {
  const top = Number(args.find((a) => a.startsWith("--top="))?.slice("--top=".length) ?? 15);
  const by = args.includes("--by=owner") ? "owner" : "function";
  const files = args.filter((a) => !a.startsWith("--"));
  if (files.length === 0) {
    throw new Error("usage: cpu-profile-summary.ts [--top=15] [--by=owner] <file.cpuprofile>...");
  }
  for (const file of files) {
    const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
    const { rows, busyMs, idleMs } = selfTimes(profile, by);
    console.log(
      `${basename(file)}: busy ${(busyMs / 1000).toFixed(1)} s, idle ${(idleMs / 1000).toFixed(1)} s`,
    );
    for (const row of rows.slice(0, top)) {
      console.log(`  ${(row.share * 100).toFixed(1).padStart(5)}%  ${row.location}`);
    }
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2));
}
