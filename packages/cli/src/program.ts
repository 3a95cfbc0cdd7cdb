/**
 * The `mqrpc` program: its commands, and the run that turns argv into an
 * exit code (see exit-codes.ts).
 */
import { readFileSync } from "node:fs";
import { Command, CommanderError } from "commander";
import { brokerCommand } from "./commands/broker.js";
import { callCommand } from "./commands/call.js";
import { describeCommand } from "./commands/describe.js";
import { exposeCommand } from "./commands/expose.js";
import { forwardCommand } from "./commands/forward.js";
import { gatewayCommand } from "./commands/gateway.js";
import { ingressCommand } from "./commands/ingress.js";
import { listCommand } from "./commands/list.js";
import { EXIT_OK, EXIT_USAGE } from "./exit-codes.js";
import { actionExitCode } from "./run-action.js";

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

/** Builds the program with every command. */
export function createProgram(): Command {
  const program = new Command("mqrpc")
    .description(
      "gRPC-style RPC over MQTT from a terminal: find servers, describe and call them; run the gRPC " +
        "gateway and ingress, port forwards and the development broker.\n\n" +
        "Connection options (--mqtt or MQRPC_MQTT_URL, --topic-prefix, TLS, --username,\n" +
        "--password-file, --mqtt-version) go after the command: mqrpc list --mqtt mqtt://host:1883",
    )
    .version(version(), "-V, --version")
    .showHelpAfterError("(run with --help for usage)")
    .showSuggestionAfterError(true)
    .exitOverride()
    .addHelpText(
      "after",
      `
Examples:
  $ mqrpc broker &
  $ mqrpc list
  $ mqrpc describe sensor-box.7
  $ mqrpc call sensor-box.7 mqrpc.example.device.v1.DeviceService/GetInfo

Exit status: 0 on success, 1 on a failure that is not an RPC status, 2 on a
bad command line, 64 + the status code when a call fails (docs/CLI.md). A
failure prints one line on stderr; MQRPC_DEBUG=1 adds the stack trace.`,
    );
  for (const command of [
    listCommand(),
    describeCommand(),
    callCommand(),
    gatewayCommand(),
    ingressCommand(),
    forwardCommand(),
    exposeCommand(),
    brokerCommand(),
  ]) {
    command.exitOverride().showHelpAfterError("(run with --help for usage)");
    program.addCommand(command);
  }
  return program;
}

/** Runs `argv` (as `process.argv`); resolves to the exit code. */
export async function runCli(argv: readonly string[]): Promise<number> {
  const program = createProgram();
  try {
    await program.parseAsync([...argv]);
  } catch (e) {
    if (e instanceof CommanderError) {
      // Help and --version "fail" with exit code 0; everything else is a usage error.
      return e.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    throw e;
  }
  return actionExitCode();
}
