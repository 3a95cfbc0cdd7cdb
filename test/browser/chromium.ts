/**
 * Headless Chromium for the browser suite: Debian's `chromium` (installed
 * by .ci/run), driven by playwright-core, which downloads no browser of its
 * own. One browser per test file; pages are reused within a file.
 *
 * Whether the suite runs: when the binary is there. Without it the suite
 * declares no tests (the run's "mqrpc browser suite" line says why), unless
 * `MQRPC_REQUIRE_BROKERS=1` (set by CI), which turns a missing Chromium
 * into a failed run, as it does for a missing broker.
 */
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { findBinary } from "../brokers/broker-process.js";
import { brokerSelection } from "../brokers/selection.js";

/**
 * Chromium's flags here: headless without a GPU, and none of the
 * background traffic (component updates, sync, QUIC probes) that this
 * machine's closed network refuses and that would only slow the start.
 */
export const CHROMIUM_ARGS: readonly string[] = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** What to tell a reader when Chromium is missing. */
export const CHROMIUM_MISSING =
  "chromium not installed: apt-get install chromium, or set MQRPC_CHROMIUM";

/** The Chromium binary: `$MQRPC_CHROMIUM`, else `chromium` (Debian) or `chromium-browser` on PATH. */
export function chromiumPath(): string | undefined {
  return (
    findBinary("chromium", "MQRPC_CHROMIUM") ?? findBinary("chromium-browser", "MQRPC_CHROMIUM")
  );
}

/**
 * The Chromium to run the suite in, or undefined when it is missing and
 * missing is allowed.
 *
 * @throws Error when it is missing under `MQRPC_REQUIRE_BROKERS=1`.
 */
export function chromiumForSuite(): string | undefined {
  const path = chromiumPath();
  if (path === undefined && brokerSelection().required) {
    throw new Error(`MQRPC_REQUIRE_BROKERS=1 but ${CHROMIUM_MISSING}`);
  }
  return path;
}

/** A running headless Chromium. */
export interface HeadlessChromium {
  readonly browser: Browser;
  /** One context (cookies, storage) for the file's pages. */
  readonly context: BrowserContext;
  /** A new page that records its uncaught errors and unhandled rejections in `errors`. */
  newPage(): Promise<TrackedPage>;
  /** Closes the browser (playwright removes the profile it made). */
  close(): Promise<void>;
}

/** A page and the uncaught errors it reported so far. */
export interface TrackedPage {
  readonly page: Page;
  readonly errors: string[];
}

/**
 * Launches Chromium at `executablePath` with {@link CHROMIUM_ARGS}; playwright
 * gives every launch a fresh profile directory (`--user-data-dir` in a new
 * temp dir) and removes it on close.
 */
export async function launchChromium(executablePath: string): Promise<HeadlessChromium> {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [...CHROMIUM_ARGS],
  });
  try {
    const context = await browser.newContext();
    return {
      browser,
      context,
      async newPage() {
        const page = await context.newPage();
        const errors: string[] = [];
        page.on("pageerror", (error) => errors.push(error.stack ?? error.message));
        return { page, errors };
      },
      close: () => browser.close(),
    };
  } catch (error) {
    await browser.close();
    throw error;
  }
}
