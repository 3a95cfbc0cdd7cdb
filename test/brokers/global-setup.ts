/**
 * vitest globalSetup: starts every broker the integration tests use, once per
 * `vitest run` (see targets.ts for why Aedes is here too), hands their URLs
 * to the workers (`inject("brokers")`), stops them all in teardown, and
 * prints which brokers the run covered:
 *
 *   mqrpc brokers covered: aedes, mosquitto-3.1.1, mosquitto-5, nats
 *
 * once when they are up and again after the test summary, with the
 * brokers that did not run and why.
 */
import type { TestProject } from "vitest/node";
import { startEmbeddedBroker } from "../../packages/runtime/src/embedded-broker.js";
import { mosquittoPath, startMosquitto } from "./mosquitto.js";
import { natsPath, startNats } from "./nats.js";
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
  const missing = (names: TargetName[], why: string) => {
    if (names.length === 0) return false;
    if (required) {
      throw new Error(`MQRPC_REQUIRE_BROKERS=1 but ${why}; install it or narrow MQRPC_BROKERS`);
    }
    for (const n of names) notCovered.set(n, why);
    return true;
  };
  const mosquittoNames = want("mosquitto-3.1.1", "mosquitto-5");
  const natsNames = want("nats");
  const startMosquittoToo =
    !missing(mosquittoNames, "mosquitto is not installed (apt-get install mosquitto)") &&
    mosquittoPath() !== undefined;
  const startNatsToo =
    !missing(natsNames, "nats-server is not installed (apt-get install nats-server)") &&
    natsPath() !== undefined;

  // Missing binaries first, so `missing` saw them before anything started.
  if (mosquittoNames.length > 0 && mosquittoPath() === undefined) {
    missing(mosquittoNames, "mosquitto is not installed (apt-get install mosquitto)");
  }
  if (natsNames.length > 0 && natsPath() === undefined) {
    missing(natsNames, "nats-server is not installed (apt-get install nats-server)");
  }

  const started = await Promise.allSettled([
    want("aedes").length > 0 ? startEmbeddedBroker() : undefined,
    startMosquittoToo && mosquittoNames.length > 0 ? startMosquitto() : undefined,
    startNatsToo && natsNames.length > 0 ? startNats() : undefined,
  ]);
  stops = [];
  for (const result of started) {
    const broker = result.status === "fulfilled" ? result.value : undefined;
    if (broker === undefined) continue;
    stops.push("close" in broker ? () => broker.close() : () => broker.stop());
  }
  const failed = started.find((r) => r.status === "rejected");
  if (failed !== undefined) {
    await stopAll();
    throw failed.reason;
  }
  const [aedes, mosquitto, nats] = started.map((r) =>
    r.status === "fulfilled" ? r.value : undefined,
  ) as [
    Awaited<ReturnType<typeof startEmbeddedBroker>> | undefined,
    Awaited<ReturnType<typeof startMosquitto>> | undefined,
    Awaited<ReturnType<typeof startNats>> | undefined,
  ];

  const targets: RunTarget[] = [];
  const add = (
    name: TargetName,
    url: string,
    protocolVersion: 4 | 5,
    sharedSubscriptions: boolean,
  ) => {
    const kind = name === "aedes" ? "aedes" : name === "nats" ? "nats" : "mosquitto";
    targets.push({
      name,
      kind,
      url,
      protocolVersion,
      mqttOptions: { protocolVersion },
      sharedSubscriptions,
    });
  };
  // Aedes has no $share support; NATS 2.9's MQTT neither.
  if (aedes !== undefined) add("aedes", aedes.url, 4, false);
  if (mosquitto !== undefined) {
    if (mosquittoNames.includes("mosquitto-3.1.1"))
      add("mosquitto-3.1.1", mosquitto.url, 4, true);
    if (mosquittoNames.includes("mosquitto-5")) add("mosquitto-5", mosquitto.url, 5, true);
  }
  if (nats !== undefined) add("nats", nats.url, 4, false);

  project.provide("brokers", targets);
  const skipped = [...notCovered].map(([name, why]) => `${name} (${why})`);
  summary =
    `mqrpc brokers covered: ${targets.map((t) => t.name).join(", ") || "none"}` +
    (skipped.length > 0 ? `; not covered: ${skipped.join(", ")}` : "");
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
