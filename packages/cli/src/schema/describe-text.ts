/**
 * What `mqrpc describe` prints: services, methods, messages and enums in
 * the shape of `.proto` declarations with fully qualified type names
 * (`--format text`), or as JSON (`--format json`).
 */
import {
  type DescEnum,
  type DescExtension,
  type DescField,
  type DescMessage,
  type DescMethod,
  type DescService,
  ScalarType,
} from "@bufbuild/protobuf";
import type { Schema, SchemaSymbol } from "./schema.js";

/** The `.proto` text of every service of `schema`, with its file. */
export function servicesText(schema: Schema): string {
  if (schema.services.length === 0) return `(no services; schema from ${schema.source})\n`;
  return schema.services.map(serviceText).join("\n");
}

/** The `.proto` text of `symbol`; a method comes with its request and response messages. */
export function symbolText(symbol: SchemaSymbol): string {
  switch (symbol.kind) {
    case "service":
      return serviceText(symbol);
    case "rpc":
      return [
        `${rpcLine(symbol)}\n`,
        messageText(symbol.input),
        symbol.output === symbol.input ? "" : messageText(symbol.output),
      ]
        .filter((s) => s !== "")
        .join("\n");
    case "message":
      return messageText(symbol);
    case "enum":
      return enumText(symbol);
    case "extension":
      return extensionText(symbol);
  }
}

function serviceText(service: DescService): string {
  const lines = [`// ${service.file.proto.name}`, `service ${service.typeName} {`];
  for (const method of service.methods) lines.push(`  ${rpcLine(method)}`);
  lines.push("}");
  return `${lines.join("\n")}\n`;
}

function rpcLine(method: DescMethod): string {
  const clientStream =
    method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming";
  const serverStream =
    method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming";
  return (
    `rpc ${method.name}(${clientStream ? "stream " : ""}${method.input.typeName}) ` +
    `returns (${serverStream ? "stream " : ""}${method.output.typeName});`
  );
}

function messageText(message: DescMessage): string {
  const lines = [`message ${message.typeName} {`];
  for (const member of message.members) {
    if (member.kind === "oneof") {
      lines.push(`  oneof ${member.name} {`);
      for (const field of member.fields) lines.push(`    ${fieldLine(field)}`);
      lines.push("  }");
    } else {
      lines.push(`  ${fieldLine(member)}`);
    }
  }
  for (const nested of message.nestedMessages)
    lines.push(`  // nested: message ${nested.typeName}`);
  for (const nested of message.nestedEnums) lines.push(`  // nested: enum ${nested.typeName}`);
  lines.push("}");
  return `${lines.join("\n")}\n`;
}

function fieldLine(field: DescField): string {
  const json = field.jsonName === field.name ? "" : ` // JSON: ${field.jsonName}`;
  return `${fieldType(field)} ${field.name} = ${field.number};${json}`;
}

/** The field's type as a `.proto` declaration writes it, with its label. */
export function fieldType(field: DescField | DescExtension): string {
  switch (field.fieldKind) {
    case "scalar":
      return `${field.proto.proto3Optional ? "optional " : ""}${scalarName(field.scalar)}`;
    case "enum":
      return `${field.proto.proto3Optional ? "optional " : ""}${field.enum.typeName}`;
    case "message":
      return field.message.typeName;
    case "list":
      return `repeated ${
        field.listKind === "scalar"
          ? scalarName(field.scalar)
          : field.listKind === "enum"
            ? field.enum.typeName
            : field.message.typeName
      }`;
    case "map":
      return `map<${scalarName(field.mapKey)}, ${
        field.mapKind === "scalar"
          ? scalarName(field.scalar)
          : field.mapKind === "enum"
            ? field.enum.typeName
            : field.message.typeName
      }>`;
  }
}

function scalarName(scalar: ScalarType): string {
  return (ScalarType[scalar] ?? "unknown").toLowerCase();
}

function enumText(desc: DescEnum): string {
  const lines = [`enum ${desc.typeName} {`];
  for (const value of desc.values) lines.push(`  ${value.name} = ${value.number};`);
  lines.push("}");
  return `${lines.join("\n")}\n`;
}

function extensionText(ext: DescExtension): string {
  return `extend ${ext.extendee.typeName} {\n  ${fieldType(ext)} ${ext.name} = ${ext.number};\n}\n`;
}

/** `describe --format json`: services with their methods, or one symbol. */
export function describeJson(schema: Schema, symbol: SchemaSymbol | undefined): unknown {
  if (symbol === undefined)
    return { source: schema.source, services: schema.services.map(serviceJson) };
  switch (symbol.kind) {
    case "service":
      return serviceJson(symbol);
    case "rpc":
      return {
        ...methodJson(symbol),
        request: messageJson(symbol.input),
        response: messageJson(symbol.output),
      };
    case "message":
      return messageJson(symbol);
    case "enum":
      return {
        kind: "enum",
        name: symbol.typeName,
        values: symbol.values.map((v) => ({ name: v.name, number: v.number })),
      };
    case "extension":
      return {
        kind: "extension",
        name: symbol.typeName,
        extendee: symbol.extendee.typeName,
        number: symbol.number,
        type: fieldType(symbol),
      };
  }
}

function serviceJson(service: DescService) {
  return {
    kind: "service",
    name: service.typeName,
    file: service.file.proto.name,
    methods: service.methods.map(methodJson),
  };
}

function methodJson(method: DescMethod) {
  return {
    kind: "method",
    name: `${method.parent.typeName}/${method.name}`,
    methodKind: method.methodKind,
    input: method.input.typeName,
    output: method.output.typeName,
  };
}

function messageJson(message: DescMessage) {
  return {
    kind: "message",
    name: message.typeName,
    fields: message.fields.map((f) => ({
      name: f.name,
      jsonName: f.jsonName,
      number: f.number,
      type: fieldType(f),
      ...(f.oneof !== undefined ? { oneof: f.oneof.name } : {}),
    })),
  };
}
