/**
 * @mqrpc/runtime for browsers (the package's `browser` export condition,
 * which bundlers such as esbuild, Vite and webpack pick for web builds):
 * everything the Node entry exports except `startEmbeddedBroker`, the one
 * piece that needs Node (Aedes, `node:net`, `ws`). Connect to the broker
 * over MQTT on WebSockets (`ws://` or `wss://`): browsers speak nothing else.
 *
 * This is the package's one list of portable exports: index.ts re-exports
 * it and adds the embedded broker.
 */

export type {
  AclAccess,
  AclIdentity,
  AclRule,
  ClientAcl,
  MosquittoAcl,
} from "./broker/mosquitto-acl.js";
export { AclSyntaxError, parseMosquittoAcl } from "./broker/mosquitto-acl.js";
export { abortable } from "./client/abortable.js";
export type { MqttTransport, MqttTransportOptions } from "./client/mqtt-transport.js";
export {
  checkMqttTransportOptions,
  createMqttTransport,
  waitForServerKey,
} from "./client/mqtt-transport.js";
export type { RawStreamRequest, RawStreamResponse } from "./client/raw-stream.js";
export { createMqttClient } from "./link/mqtt-client.js";
export type { MqttConnectionInput } from "./link/mqtt-link.js";
export type { TlsFailureKind } from "./link/tls-failure.js";
export { tlsFailureKind } from "./link/tls-failure.js";
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
  MqttServer,
  MqttServerLogger,
  MqttServerOptions,
  PartialServiceImpl,
} from "./server/mqtt-server.js";
export { checkMqttServerOptions, createMqttServer } from "./server/mqtt-server.js";
export type {
  MethodKind,
  RawCallContext,
  RawHandler,
  RawMethod,
  RawMethodResolver,
} from "./server/raw-method.js";
export type { ReflectionSource } from "./server/reflection.js";
export { reflectionServiceNames, serveReflection } from "./server/reflection.js";
export { PROTOCOL_VERSION } from "./wire/frame-codec.js";
export {
  DEFAULT_MAX_MESSAGE_BYTES,
  DEFAULT_MAX_PUBLISH_BYTES,
  MAX_TIMER_MS,
} from "./wire/limits.js";
export {
  clientIdProblem,
  decodeTopicSegment,
  encodeTopicSegment,
  TopicScheme,
} from "./wire/topic-scheme.js";
