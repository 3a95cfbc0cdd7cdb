/**
 * vitest globalSetup: starts every broker the integration tests use, once per
 * `vitest run` (see targets.ts for why Aedes is here too), hands their URLs
 * to the workers (`inject("brokers")`), stops them all in teardown, and
 * prints which brokers the run covered, and which not and why:
 *
 *   mqrpc brokers covered: aedes, mosquitto-3.1.1, mosquitto-5, nats
 */
import type { TestProject } from "vitest/node";
import {
  type EmbeddedBroker,
  startEmbeddedBroker,
} from "../../packages/runtime/src/broker/embedded-broker.js";
import { type MosquittoBroker, mosquittoPath, startMosquitto } from "./mosquitto.js";
import { type NatsBroker, natsPath, startNats } from "./nats.js";
import { brokerSelection, TARGET_NAMES, type TargetName } from "./selection.js";
import type { RunTarget } from "./targets.js";

let stops: Array<() => Promise<void>> = [];
let summary: string | undefined;

export async function setup(project: TestProject): Promise<void> {
  const { targets: wanted, required } = brokerSelection();
  const want = (...names: TargetName[]) => names.filter((n) => wanted.includes(n));
  const notCovered = new Map<TargetName, string>();
  for (const name of TARGET_NAMES) {
    if (!wanted.includes(name)) notCovered.set(name, "excluded by MQRPC_BROKERS");
  }
  /** Records `names` as not covered, or throws under MQRPC_REQUIRE_BROKERS. */
  const missing = (names: TargetName[], why: string): false => {
    if (required) {
      throw new Error(`MQRPC_REQUIRE_BROKERS=1 but ${why} (or narrow MQRPC_BROKERS)`);
    }
    for (const n of names) notCovered.set(n, why);
    return false;
  };
  const mosquittoNames = want("mosquitto-3.1.1", "mosquitto-5");
  const natsNames = want("nats");
  const runMosquitto =
    mosquittoNames.length > 0 &&
    (mosquittoPath() !== undefined ||
      missing(mosquittoNames, "mosquitto not installed: apt-get install mosquitto"));
  const runNats =
    natsNames.length > 0 &&
    (natsPath() !== undefined ||
      missing(natsNames, "nats-server not installed: apt-get install nats-server"));

  // In parallel; whatever started is stopped again if another one failed.
  const started = await Promise.allSettled([
    want("aedes").length > 0 ? startEmbeddedBroker() : undefined,
    runMosquitto ? startMosquitto() : undefined,
    runNats ? startNats() : undefined,
  ]);
  const value = <T>(r: PromiseSettledResult<T> | undefined) =>
    r?.status === "fulfilled" ? r.value : undefined;
  const aedes: EmbeddedBroker | undefined = value(started[0]);
  const mosquitto: MosquittoBroker | undefined = value(started[1]);
  const nats: NatsBroker | undefined = value(started[2]);
  stops = [];
  if (aedes !== undefined) stops.push(() => aedes.close());
  if (mosquitto !== undefined) stops.push(() => mosquitto.stop());
  if (nats !== undefined) stops.push(() => nats.stop());
  const failed = started.find((r) => r.status === "rejected");
  if (failed !== undefined) {
    await stopAll();
    throw failed.reason;
  }

  const targets: RunTarget[] = [];
  const add = (name: TargetName, url: string, protocolVersion: 4 | 5) =>
    targets.push({
      name,
      kind: name === "aedes" ? "aedes" : name === "nats" ? "nats" : "mosquitto",
      url,
      protocolVersion,
      mqttOptions: { protocolVersion },
      // Aedes has no $share without a plugin; NATS 2.9's MQTT has none.
      sharedSubscriptions: name.startsWith("mosquitto"),
    });
  if (aedes !== undefined) add("aedes", aedes.url, 4);
  if (mosquitto !== undefined) {
    if (mosquittoNames.includes("mosquitto-3.1.1")) add("mosquitto-3.1.1", mosquitto.url, 4);
    if (mosquittoNames.includes("mosquitto-5")) add("mosquitto-5", mosquitto.url, 5);
  }
  if (nats !== undefined) add("nats", nats.url, 4);

  project.provide("brokers", targets);
  const skipped = [...notCovered].map(([name, why]) => `${name} (${why})`);
  summary =
    `mqrpc brokers covered: ${targets.map((t) => t.name).join(", ") || "none"}` +
    (skipped.length > 0 ? `; not covered: ${skipped.join(", ")}` : "");
  // Printed here, before the tests, and again in teardown, after vitest's
  // summary, where a reader of the run's end looks for it.
  console.log(summary);
}

export async function teardown(): Promise<void> {
  await stopAll();
  if (summary !== undefined) console.log(summary);
}

async function stopAll(): Promise<void> {
  const pending = stops.reverse();
  stops = [];
  const results = await Promise.allSettled(pending.map((stop) => stop()));
  const failed = results.find((r) => r.status === "rejected");
  if (failed !== undefined) throw failed.reason;
}
