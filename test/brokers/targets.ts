/**
 * The broker targets an integration suite runs against. Brokers are started
 * once per test run by global-setup.ts (Aedes in the runner process,
 * Mosquitto and NATS as child processes) and handed to the test workers with
 * vitest's provide/inject.
 */
import { describe, inject } from "vitest";

/** One broker and MQTT protocol level to run a suite on. */
export interface BrokerTarget {
  /** e.g. `aedes`, `mosquitto-3.1.1`, `mosquitto-5`, `nats`. */
  readonly name: string;
  readonly kind: "aedes" | "mosquitto" | "nats";
  readonly url: string;
  /** MQTT.js options that select the protocol level. */
  readonly mqttOptions: { readonly protocolVersion: 4 | 5 };
  /** Whether `$share/...` subscriptions work on this target. */
  readonly sharedSubscriptions: boolean;
}

declare module "vitest" {
  export interface ProvidedContext {
    brokers: BrokerTarget[];
  }
}

/** The targets of this run. */
export function brokerTargets(): BrokerTarget[] {
  return inject("brokers");
}

/** Declares `fn`'s tests once per target, inside `describe("on <target>")`. */
export function forEachBroker(fn: (target: BrokerTarget) => void): void {
  for (const target of brokerTargets()) {
    describe(`on ${target.name}`, () => fn(target));
  }
}

/** Declares `fn`'s tests for the targets that satisfy `accept`. */
export function forBrokersWhere(
  accept: (target: BrokerTarget) => boolean,
  fn: (target: BrokerTarget) => void,
): void {
  for (const target of brokerTargets().filter(accept)) {
    describe(`on ${target.name}`, () => fn(target));
  }
}
