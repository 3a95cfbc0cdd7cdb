/**
 * @mqrpc/runtime: gRPC-style RPC over MQTT with Connect's API. Clients get a
 * Connect `Transport`; servers take Connect service implementations.
 *
 * The Node entry: the browser entry's named exports (index.browser.ts, the
 * one list of them) and the embedded broker, which needs Node.
 */

export type {
  EmbeddedBroker,
  EmbeddedBrokerClient,
  EmbeddedBrokerDenial,
  EmbeddedBrokerOptions,
  EmbeddedBrokerPublish,
} from "./broker/embedded-broker.js";
export { startEmbeddedBroker } from "./broker/embedded-broker.js";
export * from "./index.browser.js";
