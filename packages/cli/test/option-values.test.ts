/**
 * A value that the CLI or the library under it refuses (a server id, topic
 * prefix, client id, upstream URL, port, duration…) is refused before any broker
 * contact, by every command that connects: exit 2 naming the flag, with no
 * `cannot reach the MQTT broker … waiting for it` line and no connection
 * to the broker. The "broker" is a TCP listener that counts the
 * connections it accepts (and never answers MQTT, so a command that got
 * past its checks would wait on it instead of exiting). Good values next
 * to the bad ones do reach it, so the count can tell.
 */
import { describe, expect, it } from "vitest";
import { CliProcess, type CliResult } from "./support/cli-process.js";
import { countingBroker } from "./support/counting-broker.js";

function run(args: readonly string[]): Promise<CliResult> {
  const p = CliProcess.start(args);
  p.endInput();
  return p.exited;
}

/** `s` as a regular expression that matches it literally. */
const literal = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Commander's usage error for option `flag` given `value`. */
function badOption(flag: string, value: string, reason: string): RegExp {
  return new RegExp(
    `^error: option '${literal(flag)}' argument '${literal(value)}' is invalid\\. ${literal(reason)}\\n\\(run with --help for usage\\)\\n$`,
  );
}

const EMPTY_SERVER_ID =
  /^error: command-argument value '' is invalid for argument 'server-id'\. must not be empty\.\n/;
const VIRTUAL_PORT = "must be a port number from 1 to 65535.";
const TOO_LONG = "must be at most 596h (2147483647 ms, the longest timer Node.js keeps).";
/** The runtime's reason for refusing client id "a.b" (clientIdProblem). */
const ID_PROBLEM =
  'the MQTT client id "a.b" has characters other than A-Z, a-z, 0-9, "_" and "-"; broker ACLs bind mqrpc topics to the client id as it is, so mqrpc accepts only those';
const USERNAME_ID = exactLine(
  `mqrpc: --username: ${ID_PROBLEM} (without --client-id the username is the client id, as brokers with use_username_as_clientid make it; give --client-id if the broker does not bind client ids to usernames)`,
);
const CLIENT_ID = exactLine(`mqrpc: --client-id: ${ID_PROBLEM}`);
const EMPTY_CLIENT_ID = exactLine("mqrpc: --client-id: the MQTT client id is empty");
const UPSTREAM_FORMS = '; use "http://host:port", "https://host:port" or "unix:/path"';

/** Exactly `line` on stderr. */
function exactLine(line: string): RegExp {
  return new RegExp(`^${literal(line)}\n$`);
}

const expose = ["expose", "--server-id", "d", "--port", "22", "--target", "127.0.0.1:22"];
const forward = ["forward", "--server-id", "d", "--port", "22"];
const gateway = ["gateway", "--server-id", "g", "--upstream", "http://127.0.0.1:1=a.B"];

/** Command lines that must be refused, and the message on stderr. */
const REFUSED: ReadonlyArray<readonly [string, readonly string[], RegExp]> = [
  [
    "expose --port 0",
    ["expose", "--server-id", "d", "--port", "0", "--target", "127.0.0.1:22"],
    badOption("--port <port>", "0", VIRTUAL_PORT),
  ],
  [
    "expose with an empty --server-id",
    ["expose", "--server-id", "", "--port", "22", "--target", "127.0.0.1:22"],
    badOption("--server-id <id>", "", "must not be empty."),
  ],
  [
    "expose --target with port 0",
    ["expose", "--server-id", "d", "--port", "22", "--target", "127.0.0.1:0"],
    /^mqrpc: --target "127\.0\.0\.1:0": the port must be from 1 to 65535\.\n$/,
  ],
  ["expose --username a.b (the client id)", [...expose, "--username", "a.b"], USERNAME_ID],
  ["expose --client-id a.b", [...expose, "--client-id", "a.b"], CLIENT_ID],
  ['expose --client-id ""', [...expose, "--client-id", ""], EMPTY_CLIENT_ID],
  [
    "expose --topic-prefix a+b",
    [...expose, "--topic-prefix", "a+b"],
    /^mqrpc: --topic-prefix "a\+b" is invalid: use one or more levels of A-Z, a-z, 0-9, "_" and "-" separated by "\/"\n$/,
  ],
  [
    "expose --shutdown-timeout 1000h",
    [...expose, "--shutdown-timeout", "1000h"],
    badOption("--shutdown-timeout <duration>", "1000h", TOO_LONG),
  ],
  [
    "forward --port 0",
    ["forward", "--server-id", "d", "--port", "0"],
    badOption("--port <port>", "0", VIRTUAL_PORT),
  ],
  [
    "forward --port 65536",
    ["forward", "--server-id", "d", "--port", "65536"],
    badOption("--port <port>", "65536", VIRTUAL_PORT),
  ],
  [
    "forward with an empty --server-id",
    ["forward", "--server-id", "", "--port", "22"],
    badOption("--server-id <id>", "", "must not be empty."),
  ],
  ["forward --username a.b", [...forward, "--username", "a.b"], USERNAME_ID],
  ["forward --client-id a.b", [...forward, "--client-id", "a.b"], CLIENT_ID],
  [
    "forward --connection-timeout 1000h",
    [...forward, "--connection-timeout", "1000h"],
    badOption("--connection-timeout <duration>", "1000h", TOO_LONG),
  ],
  [
    "gateway with an empty --server-id",
    ["gateway", "--server-id", "", "--upstream", "http://127.0.0.1:1=a.B"],
    badOption("--server-id <id>", "", "must not be empty."),
  ],
  ["gateway --username a.b", [...gateway, "--username", "a.b"], USERNAME_ID],
  ["gateway --client-id a.b", [...gateway, "--client-id", "a.b"], CLIENT_ID],
  [
    "gateway --upstream ftp://h:1 (a scheme other than http, https, unix)",
    ["gateway", "--server-id", "g", "--upstream", "ftp://h:1"],
    exactLine(`mqrpc: --upstream "ftp://h:1": "ftp://h:1" has scheme ftp:${UPSTREAM_FORMS}`),
  ],
  [
    "gateway --upstream http://h=a.B (no port)",
    ["gateway", "--server-id", "g", "--upstream", "http://h=a.B"],
    exactLine(
      'mqrpc: --upstream "http://h=a.B": "http://h" needs a port, e.g. "http://127.0.0.1:50051"',
    ),
  ],
  [
    "gateway --upstream unix: (no socket path)",
    ["gateway", "--server-id", "g", "--upstream", "unix:=@image.binpb"],
    exactLine(
      'mqrpc: --upstream "unix:=@image.binpb": "unix:" needs an absolute socket path, e.g. "unix:/run/app.sock"',
    ),
  ],
  [
    "gateway --upstream garbage",
    ["gateway", "--server-id", "g", "--upstream", "not a url"],
    exactLine(`mqrpc: --upstream "not a url": "not a url" is not a URL${UPSTREAM_FORMS}`),
  ],
  [
    "gateway --upstream http://h:1/grpc (a path)",
    ["gateway", "--server-id", "g", "--upstream", "http://h:1/grpc=a.B"],
    exactLine(
      'mqrpc: --upstream "http://h:1/grpc=a.B": "http://h:1/grpc" must be just scheme, host and port (no path or query)',
    ),
  ],
  [
    "gateway: a bad --upstream after a good one",
    [...gateway, "--upstream", "localhost:50051=a.C"],
    exactLine(
      `mqrpc: --upstream "localhost:50051=a.C": "localhost:50051" has scheme localhost:${UPSTREAM_FORMS}`,
    ),
  ],
  [
    "gateway --shared a+b",
    [...gateway, "--shared", "a+b"],
    /^mqrpc: --shared: share group "a\+b" must be A-Z a-z 0-9 _ - only \(a topic level as it is\)\n$/,
  ],
  [
    "gateway --start-timeout 1000h",
    [...gateway, "--start-timeout", "1000h"],
    badOption("--start-timeout <duration>", "1000h", TOO_LONG),
  ],
  [
    "gateway --upstream-connect-timeout 1000h",
    [...gateway, "--upstream-connect-timeout", "1000h"],
    badOption("--upstream-connect-timeout <duration>", "1000h", TOO_LONG),
  ],
  [
    "gateway --upstream-keepalive-time 1000h",
    [...gateway, "--upstream-keepalive-time", "1000h"],
    badOption("--upstream-keepalive-time <duration>", "1000h", TOO_LONG),
  ],
  [
    "gateway --upstream-keepalive-timeout without --upstream-keepalive-time",
    [...gateway, "--upstream-keepalive-timeout", "5s"],
    exactLine(
      "mqrpc: --upstream-keepalive-timeout needs --upstream-keepalive-time: keepalive PINGs are off without it",
    ),
  ],
  ["ingress --username a.b", ["ingress", "--username", "a.b"], USERNAME_ID],
  ["ingress --client-id a.b", ["ingress", "--client-id", "a.b"], CLIENT_ID],
  [
    "ingress --reflection-timeout 1000h",
    ["ingress", "--reflection-timeout", "1000h"],
    badOption("--reflection-timeout <duration>", "1000h", TOO_LONG),
  ],
  [
    "ingress --keepalive-time 1000h",
    ["ingress", "--keepalive-time", "1000h"],
    badOption("--keepalive-time <duration>", "1000h", TOO_LONG),
  ],
  [
    "ingress --keepalive-timeout 1000h",
    ["ingress", "--keepalive-timeout", "1000h"],
    badOption("--keepalive-timeout <duration>", "1000h", TOO_LONG),
  ],
  ["call with an empty server id", ["call", "", "a.B/C"], EMPTY_SERVER_ID],
  ["call --username a.b", ["call", "d", "a.B/C", "--username", "a.b"], USERNAME_ID],
  ["call --client-id a.b", ["call", "d", "a.B/C", "--client-id", "a.b"], CLIENT_ID],
  [
    "call --timeout 1000h",
    ["call", "d", "a.B/C", "--timeout", "1000h"],
    badOption("--timeout <duration>", "1000h", TOO_LONG),
  ],
  ["describe with an empty server id", ["describe", ""], EMPTY_SERVER_ID],
  ["describe --username a.b", ["describe", "d", "--username", "a.b"], USERNAME_ID],
  ["describe --client-id a.b", ["describe", "d", "--client-id", "a.b"], CLIENT_ID],
  ["list --username a.b", ["list", "--username", "a.b"], USERNAME_ID],
  [
    "list --client-id a.b (with a good --username)",
    ["list", "--username", "ops", "--client-id", "a.b"],
    CLIENT_ID,
  ],
  [
    "list --connect-timeout 1000h",
    ["list", "--connect-timeout", "1000h"],
    badOption("--connect-timeout <duration>", "1000h", TOO_LONG),
  ],
];

describe.concurrent("option values are refused before any broker contact", () => {
  it.for(REFUSED)(
    "%s: exit 2 naming the flag, no broker contact",
    async ([, args, message], context) => {
      const broker = await countingBroker(context);
      const end = await run([...args, "--mqtt", broker.url]);
      expect(end.stderr).toMatch(message);
      expect(end.code, end.stderr).toBe(2);
      // No "warn cannot reach the MQTT broker … waiting for it", nor anything else.
      expect(end.stdout).toBe("");
      expect(await broker.settledCount()).toBe(0);
    },
  );

  it.for([
    // A server id is any non-empty string: `/` is encoded in topics (d=2Fx).
    [
      "expose --server-id d/x",
      ["expose", "--server-id", "d/x", "--port", "65535", "--target", ":22"],
    ],
    ["forward --port 65535", ["forward", "--server-id", "d/x", "--port", "65535"]],
    ["call --username ok_user-1", ["call", "d.x", "a.B/C", "--username", "ok_user-1"]],
    // The username is no client id when --client-id gives one.
    [
      "list --username a.b --client-id list-1",
      ["list", "--username", "a.b", "--client-id", "list-1"],
    ],
    ["describe --timeout 596h", ["describe", "d", "--timeout", "596h"]],
    // Every upstream URL form, and a client id of the runtime's alphabet.
    [
      "gateway --upstream https://h, unix:///run/x.sock --client-id gw_1-a",
      [
        "gateway",
        "--server-id",
        "g",
        "--upstream",
        "https://h=a.B",
        "--upstream",
        "unix:///run/x.sock=a.C",
        "--upstream",
        "http://[::1]:50051=a.D",
        "--client-id",
        "gw_1-a",
      ],
    ],
  ] as const)("%s is accepted: the command goes on to the broker", async ([, args], context) => {
    const broker = await countingBroker(context);
    const p = CliProcess.start([...args, "--mqtt", broker.url]);
    context.onTestFinished(() => p.kill());
    await broker.untilAccepted(1);
    expect(p.stderr).toBe("");
  });
});
