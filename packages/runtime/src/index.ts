/**
 * @mqrpc/runtime: gRPC-style RPC over MQTT with Connect's API. Clients get a
 * Connect `Transport`; servers take Connect service implementations.
 */

export type {
  EmbeddedBroker,
  EmbeddedBrokerClient,
  EmbeddedBrokerDenial,
  EmbeddedBrokerOptions,
  EmbeddedBrokerPublish,
} from "./embedded-broker.js";
export { startEmbeddedBroker } from "./embedded-broker.js";
export { PROTOCOL_VERSION } from "./frame-codec.js";
export { DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_PUBLISH_BYTES } from "./limits.js";
export type { MethodSettings, ServiceSettings } from "./method-settings.js";
export {
  bindServiceSettings,
  defaultMethodSettings,
  mergeServiceSettings,
  methodSettingsKey,
  registerServiceSettings,
  settingsFromDescriptor,
} from "./method-settings.js";
export type {
  AclAccess,
  AclIdentity,
  AclRule,
  ClientAcl,
  MosquittoAcl,
} from "./mosquitto-acl.js";
export { AclSyntaxError, parseMosquittoAcl } from "./mosquitto-acl.js";
export { createMqttClient } from "./mqtt-client.js";
export type { MqttConnectionInput } from "./mqtt-link.js";
export type {
  MqttServer,
  MqttServerLogger,
  MqttServerOptions,
  PartialServiceImpl,
} from "./mqtt-server.js";
export { createMqttServer } from "./mqtt-server.js";
export type { MqttTransport, MqttTransportOptions } from "./mqtt-transport.js";
export { createMqttTransport, waitForServerKey } from "./mqtt-transport.js";
export { decodeTopicSegment, encodeTopicSegment, TopicScheme } from "./topic-scheme.js";
