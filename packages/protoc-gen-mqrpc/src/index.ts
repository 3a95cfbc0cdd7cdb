/**
 * protoc-gen-mqrpc: generates typed mqrpc clients and server registration
 * (`*_mqrpc.ts`) next to protoc-gen-es output.
 */

export type { PluginOptions } from "./plugin-options.js";
export { protocGenMqrpc } from "./protoc-gen-mqrpc.js";
