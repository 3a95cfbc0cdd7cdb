/**
 * The mqrpc wire schema and custom options as protobuf-es descriptors, for
 * device implementations, tooling and generated code that reads the options.
 */
export * from "./gen/mqrpc/v1/options_pb.js";
export * from "./gen/mqrpc/v1/wire_pb.js";
