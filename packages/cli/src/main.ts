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
    process.stderr.write(`mqrpc: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    await flushOutput();
    process.exit(1);
  },
);
