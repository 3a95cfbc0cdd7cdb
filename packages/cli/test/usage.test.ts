/**
 * The command line itself, run as a process: help with examples on every
 * command, usage errors exit 2 and name the option, credentials from a
 * password file, and the exit codes of a broker that refuses or is absent.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import { startEmbeddedBroker } from "@mqrpc/runtime";
import { describe, expect, it } from "vitest";
import { CliProcess, type CliResult } from "./support/cli-process.js";

function run(...args: string[]): Promise<CliResult> {
  const p = CliProcess.start(args);
  p.endInput();
  return p.exited;
}

const COMMANDS = ["list", "describe", "call", "gateway", "ingress", "forward", "expose", "broker"];

describe.concurrent("the mqrpc command line", { timeout: 60_000 }, () => {
  it("has --help with examples for every command, and --version", async () => {
    const top = await run("--help");
    expect(top.code).toBe(0);
    for (const command of COMMANDS) expect(top.stdout).toMatch(new RegExp(`\\n  ${command} `));
    for (const command of COMMANDS) {
      const help = await run(command, "--help");
      expect(help.code).toBe(0);
      expect(help.stdout).toContain(`Usage: mqrpc ${command}`);
      expect(help.stdout).toContain("Examples:\n  $ mqrpc");
      // Only the commands that make a reflection call of their own take metadata for it.
      expect(help.stdout.includes("--reflect-header"), command).toBe(
        command === "describe" || command === "call",
      );
      if (command !== "broker") {
        for (const option of [
          "--mqtt <url>",
          "--topic-prefix",
          "--cacert",
          "--cert",
          "--key",
          "--username",
          "--password-file",
          "--mqtt-version",
        ]) {
          expect(help.stdout).toContain(option);
        }
      }
    }
    const version = await run("--version");
    expect(version.stdout).toMatch(/^\d+\.\d+\.\d+\n$/);
  });

  it("list --help says what SINCE shows: the server's time, '-' only for presence without one", async () => {
    const help = await run("list", "--help");
    expect(help.code).toBe(0);
    // Commander wraps the description: compare it as one line.
    const text = help.stdout.replace(/\s+/g, " ");
    expect(text).toContain(
      "and since when, by the server's clock ('-' when the presence carries no time, as a last will does, and it was retained before list started; with --watch, a change seen live without a time shows when list saw it)",
    );
  });

  it("exits 2 naming the option for a bad command line", async () => {
    const cases: Array<[string[], RegExp]> = [
      [["list", "--bogus"], /unknown option '--bogus'/],
      [["call", "dev"], /missing required argument 'method'/],
      [
        ["call", "dev", "a.B/C", "--timeout", "soon"],
        /option '--timeout <duration>' argument 'soon' is invalid/,
      ],
      [["list", "--mqtt-version", "4.5"], /'--mqtt-version <version>' argument '4.5' is invalid/],
      [["list", "--format", "yaml"], /'--format <format>' argument 'yaml' is invalid/],
      [["list", "--cacert", "ca.pem"], /--cacert needs a TLS broker URL/],
      [["list", "--password-file", "pw"], /--password-file needs --username/],
      [["list", "--mqtt", "http://x"], /--mqtt: unsupported scheme "http:"/],
      [["frobnicate"], /unknown command 'frobnicate'/],
      [["forward", "--server-id", "d"], /required option '--port <port>' not specified/],
      [
        ["expose", "--server-id", "d", "--port", "70000", "--target", ":22"],
        /'--port <port>' argument '70000' is invalid/,
      ],
      [
        ["gateway", "--server-id", "g", "--upstream", "http://x:1="],
        /--upstream "http:\/\/x:1=": write URL/,
      ],
      [
        // Refused by checkUpstreamUrl of @mqrpc/gateway: one line, naming the flag.
        ["gateway", "--server-id", "g", "--upstream", "ftp://x:1", "--mqtt", "mqtt://127.0.0.1:9"],
        /^mqrpc: --upstream "ftp:\/\/x:1": "ftp:\/\/x:1" has scheme ftp:.*\n$/,
      ],
    ];
    for (const [args, message] of cases) {
      const r = await run(...args);
      expect(r.stderr, args.join(" ")).toMatch(message);
      expect(r.code, args.join(" ")).toBe(2);
    }
  });

  it("logs in with --username and --password-file; a refused login exits 80, an absent broker 78", async (context) => {
    const broker = await startEmbeddedBroker({ users: { ops: "s3cret" } });
    const dir = mkdtempSync(join(tmpdir(), "mqrpc-cli-usage-"));
    context.onTestFinished(async () => {
      await broker.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const good = join(dir, "good");
    const bad = join(dir, "bad");
    writeFileSync(good, "s3cret\n");
    writeFileSync(bad, "guess\n");
    const ok = await run(
      "list",
      "--mqtt",
      broker.url,
      "--username",
      "ops",
      "--password-file",
      good,
    );
    expect(ok.stderr).toBe("");
    expect(ok.code).toBe(0);
    const refused = await run(
      "list",
      "--mqtt",
      broker.url,
      "--username",
      "ops",
      "--password-file",
      bad,
    );
    expect(refused.stderr).toMatch(
      /unauthenticated: the MQTT broker at .* refused the username or password/,
    );
    expect(refused.code).toBe(64 + Code.Unauthenticated);
    const absent = await run("list", "--mqtt", "mqtt://127.0.0.1:9");
    expect(absent.stderr).toMatch(
      /unavailable: cannot reach the MQTT broker at mqtt:\/\/127\.0\.0\.1:9/,
    );
    expect(absent.code).toBe(64 + Code.Unavailable);
  });
});
