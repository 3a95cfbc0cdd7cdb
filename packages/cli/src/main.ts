/**
 * The `mqrpc` executable: runs the program and exits with its code once
 * stdout and stderr are flushed.
 */

import { EXIT_FAILURE } from "./exit-codes.js";
import { flushOutput, watchStdout } from "./output.js";
import { runCli } from "./program.js";

watchStdout();

// A command whose promise never settles (a bug: something it awaits can
// never happen) would let Node exit 0 when nothing is left to do: say so
// and fail instead.
let settled = false;
process.once("beforeExit", () => {
  if (settled) return;
  process.stderr.write("mqrpc: internal error: the command stopped without finishing\n");
  process.exit(EXIT_FAILURE);
});

runCli(process.argv).then(
  async (code) => {
    settled = true;
    await flushOutput();
    process.exit(code);
  },
  async (e: unknown) => {
    settled = true;
    const { errorReport, exitCodeFor } = await import("./error-report.js");
    process.stderr.write(errorReport(e));
    await flushOutput();
    process.exit(exitCodeFor(e));
  },
);
