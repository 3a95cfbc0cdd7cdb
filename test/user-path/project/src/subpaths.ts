/**
 * Type-checks the runtime's subpath exports: `@mqrpc/runtime/proto` and
 * the generated modules under `@mqrpc/runtime/proto/*`.
 */
import type { MqttOptions } from "@mqrpc/runtime/proto";
import type { MqttOptions as ByPath } from "@mqrpc/runtime/proto/mqrpc/v1/options_pb.js";

export const samePath = (options: MqttOptions): ByPath => options;
