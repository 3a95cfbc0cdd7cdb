/**
 * @mqrpc/gateway (Node.js): existing gRPC servers served over MQTT
 * (`createGrpcGateway`, device side).
 */

export type {
  GrpcGateway,
  GrpcGatewayOptions,
  GrpcGatewayRoute,
  GrpcGatewayUpstream,
  GrpcUpstreamOptions,
} from "./gateway/create-grpc-gateway.js";
export { createGrpcGateway } from "./gateway/create-grpc-gateway.js";
export type { SchemaSource } from "./gateway/method-map.js";
export type { UpstreamConnectivity, UpstreamTlsOptions } from "./gateway/upstream.js";
export { checkUpstreamUrl } from "./gateway/upstream-url.js";
export type { DescriptorSetInput } from "./ingress/device-schema.js";
export type { DeviceTransportOptions } from "./ingress/device-transports.js";
export type { GrpcIngress, GrpcIngressOptions } from "./ingress/grpc-ingress.js";
export { createGrpcIngress } from "./ingress/grpc-ingress.js";
