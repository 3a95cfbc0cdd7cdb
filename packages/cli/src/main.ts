/**
 * The `mqrpc` executable: runs the program and exits with its code once
 * stdout and stderr are flushed.
 */
import { flushOutput, watchStdout } from "./output.js";
import { runCli } from "./program.js";

watchStdout();

runCli(process.argv).then(
  async (code) => {
    await flushOutput();
    process.exit(code);
  },
  async (e: unknown) => {
    const { errorReport, exitCodeFor } = await import("./error-report.js");
    process.stderr.write(errorReport(e));
    await flushOutput();
    process.exit(exitCodeFor(e));
  },
);
