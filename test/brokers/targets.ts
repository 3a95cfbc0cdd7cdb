/**
 * The broker targets an integration suite runs against.
 *
 * All brokers are started ONCE per `vitest run` by global-setup.ts and their
 * URLs handed to the test workers with vitest's provide/inject:
 * - `aedes`: the runtime's embedded broker (MQTT 3.1.1), in the vitest main
 *   process. One instance per run rather than one per test file, so every
 *   target works the same way (a URL from `inject`, no per-file lifecycle to
 *   get wrong) and Aedes sees the same concurrent load as the real brokers.
 *   Test files never share topics: they use unique server and client ids.
 * - `mosquitto-3.1.1` and `mosquitto-5`: one Mosquitto 2 child process, two
 *   protocol levels; only when the binary is installed.
 * - `nats`: nats-server in MQTT mode (3.1.1); only when installed.
 *
 * `MQRPC_BROKERS` narrows the set and `MQRPC_REQUIRE_BROKERS=1` makes a
 * missing binary fatal (see selection.ts). Suites that need a broker with a
 * special config (ACLs, persistence, packet limits) start their own with
 * startMosquitto()/startNats() instead.
 */
import { describe, inject } from "vitest";
import type { BrokerKind, TargetName } from "./selection.js";

/** One broker and MQTT protocol level to run a suite on. */
export interface BrokerTarget {
  /** e.g. `aedes`, `mosquitto-3.1.1`, `mosquitto-5`, `nats`. */
  readonly name: string;
  readonly kind: BrokerKind;
  /** `mqtt://127.0.0.1:<port>` */
  readonly url: string;
  /** MQTT.js options that select the protocol level: spread them into `connect()`. */
  readonly mqttOptions: { readonly protocolVersion: 4 | 5 };
  /** Whether `$share/<group>/...` subscriptions work on this target. */
  readonly sharedSubscriptions: boolean;
  /**
   * The MQTT protocol level, same as `mqttOptions.protocolVersion`. Always
   * set on the targets of {@link brokerTargets} and {@link forEachBroker}
   * (typed {@link RunTarget}); optional here only so that targets built by
   * hand around a broker a test started itself need not repeat it.
   */
  readonly protocolVersion?: 4 | 5;
}

/** A target of this run, as started by global-setup.ts. */
export interface RunTarget extends BrokerTarget {
  readonly name: TargetName;
  readonly protocolVersion: 4 | 5;
}

declare module "vitest" {
  export interface ProvidedContext {
    /** Set by test/brokers/global-setup.ts. */
    brokers: RunTarget[];
  }
}

/** The targets of this run, in a fixed order: aedes, mosquitto-3.1.1, mosquitto-5, nats. */
export function brokerTargets(): RunTarget[] {
  const targets = inject("brokers");
  if (targets === undefined) {
    throw new Error(
      'no broker targets: test/brokers/global-setup.ts did not run (it belongs in vitest.config.ts "globalSetup")',
    );
  }
  return targets;
}

/** Declares `fn`'s tests once per target, inside `describe("on <target>")`. */
export function forEachBroker(fn: (target: RunTarget) => void): void {
  forBrokersWhere(() => true, fn);
}

/** Declares `fn`'s tests for the targets that satisfy `accept`, inside `describe("on <target>")`. */
export function forBrokersWhere(
  accept: (target: RunTarget) => boolean,
  fn: (target: RunTarget) => void,
): void {
  const targets = brokerTargets().filter(accept);
  for (const target of targets) {
    describe(`on ${target.name}`, () => fn(target));
  }
}
