/**
 * Runs a command's action and turns its outcome into the process's exit
 * code: the action's own code, or the code of the error it threw, printed
 * on stderr first.
 */

let exitCode = 0;

/** The exit code of the last action run. */
export function actionExitCode(): number {
  return exitCode;
}

/** Wraps an action that resolves to an exit code, printing and mapping what it throws. */
export function runAction<A extends unknown[]>(
  action: (...args: A) => Promise<number>,
): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      exitCode = await action(...args);
    } catch (e) {
      const { errorReport, exitCodeFor } = await import("./error-report.js");
      process.stderr.write(errorReport(e));
      exitCode = exitCodeFor(e);
    }
  };
}
