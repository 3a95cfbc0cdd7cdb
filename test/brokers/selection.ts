/**
 * Which broker targets a run covers, from the environment:
 *
 * - `MQRPC_BROKERS`: comma list of broker kinds (`aedes`, `mosquitto`, `nats`)
 *   or single targets (`mosquitto-3.1.1`, `mosquitto-5`). Unset or empty means
 *   all of them. An unknown name is an error, so a typo cannot silently turn
 *   a run into an Aedes-only one.
 * - `MQRPC_REQUIRE_BROKERS=1` (set by CI): a selected broker whose binary is
 *   missing fails the run instead of being skipped.
 *
 * Pure (no vitest, no I/O) so the global setup, the helpers used inside test
 * files and the tests of the harness itself all read it the same way.
 */

export const BROKER_KINDS = ["aedes", "mosquitto", "nats"] as const;
export type BrokerKind = (typeof BROKER_KINDS)[number];

export const TARGET_NAMES = ["aedes", "mosquitto-3.1.1", "mosquitto-5", "nats"] as const;
export type TargetName = (typeof TARGET_NAMES)[number];

const KIND_OF: Readonly<Record<TargetName, BrokerKind>> = {
  aedes: "aedes",
  "mosquitto-3.1.1": "mosquitto",
  "mosquitto-5": "mosquitto",
  nats: "nats",
};

export interface BrokerSelection {
  /** The targets `MQRPC_BROKERS` selects, in {@link TARGET_NAMES} order. */
  readonly targets: readonly TargetName[];
  /** `MQRPC_REQUIRE_BROKERS` is set: missing binaries are errors. */
  readonly required: boolean;
}

type Env = Readonly<Record<string, string | undefined>>;

/** Reads `MQRPC_BROKERS` and `MQRPC_REQUIRE_BROKERS`; throws on an unknown broker name. */
export function brokerSelection(env: Env = process.env): BrokerSelection {
  const raw = (env.MQRPC_BROKERS ?? "")
    .split(",")
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== "");
  const selected = new Set<TargetName>();
  for (const name of raw.length === 0 ? BROKER_KINDS : raw) {
    const matching = TARGET_NAMES.filter((t) => t === name || KIND_OF[t] === name);
    if (matching.length === 0) {
      throw new Error(
        `MQRPC_BROKERS: unknown broker "${name}"; use a comma list of ${[...BROKER_KINDS, "mosquitto-3.1.1", "mosquitto-5"].join(", ")}`,
      );
    }
    for (const t of matching) selected.add(t);
  }
  const require = (env.MQRPC_REQUIRE_BROKERS ?? "").trim().toLowerCase();
  return {
    targets: TARGET_NAMES.filter((t) => selected.has(t)),
    required: require !== "" && require !== "0" && require !== "false",
  };
}

/** Whether any target of `kind` is selected. */
export function kindSelected(kind: BrokerKind, env: Env = process.env): boolean {
  return brokerSelection(env).targets.some((t) => KIND_OF[t] === kind);
}
