/**
 * `mqrpc list`: the servers online on a broker, from their retained
 * presence; `--watch` goes on printing every change.
 */

import { Command, Option } from "commander";
import { addConnectionOptions, type ConnectionFlags } from "../connection-options.js";
import { parseDuration } from "../option-parsers.js";
import { runAction } from "../run-action.js";

/** The options of the command, as commander parses them. */
export interface ListFlags extends ConnectionFlags {
  readonly watch?: boolean;
  readonly all?: boolean;
  readonly format: "table" | "json";
  readonly settle: number;
}

/** The `list` command. */
export function listCommand(): Command {
  const command = new Command("list")
    .summary("list the servers online, from their retained presence (--watch: follow changes)")
    .description(
      "List the servers online now, from their retained presence: server id, state, instances " +
        "(online/known), and since when, by the server's clock ('-' when the presence carries no " +
        "time, as a last will does, and it was retained before list started; with --watch, a " +
        "change seen live without a time shows when list saw it)",
    )
    .option("-w, --watch", "keep running and print one line per presence change")
    .option("-a, --all", "also list servers that are offline or disconnected")
    .addOption(
      new Option("--format <format>", "output format").choices(["table", "json"]).default("table"),
    )
    .addOption(
      new Option(
        "--settle <duration>",
        "quiet time after the last retained announcement before printing",
      )
        .argParser(parseDuration)
        .default(300, "300ms"),
    );
  addConnectionOptions(command);
  return command
    .addHelpText(
      "after",
      `
Examples:
  $ mqrpc list
  $ mqrpc list --all --format json | jq '.[] | select(.state == "online") | .serverId'
  $ mqrpc list --watch --mqtt mqtts://broker.example.com:8883 --cacert ca.pem \\
      --username ops --password-file ~/.mqrpc-password`,
    )
    .action(runAction(async (flags: ListFlags) => (await import("./list-run.js")).list(flags)));
}
