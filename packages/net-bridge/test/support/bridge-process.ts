/**
 * Runs bridge-child.ts in a child process (a {@link LineChild}: it never
 * outlives this process), for the tests that kill a bridge peer.
 */
import { fileURLToPath } from "node:url";
import { LineChild } from "../../../../test/support/line-child.js";
import type { BridgeChildConfig, BridgeChildEvent } from "./bridge-child.js";

const SCRIPT = fileURLToPath(new URL("./bridge-child.ts", import.meta.url));

/**
 * Starts a bridge child with `config` and waits for its first event of
 * `kind`; rejects, with the child's output, if the child exits first.
 */
export async function startBridgeChild(
  config: BridgeChildConfig,
  kind: BridgeChildEvent["event"],
): Promise<LineChild<BridgeChildEvent>> {
  const child = LineChild.tsx<BridgeChildEvent>(SCRIPT, config, "bridge child");
  await child.until((e) => e.event === kind);
  return child;
}
