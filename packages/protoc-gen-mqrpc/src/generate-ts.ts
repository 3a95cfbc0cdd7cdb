/**
 * Emits `<name>_mqrpc.ts` for every proto file with services: per service,
 * the resolved MQTT settings (`<Service>Mqtt`), `create<Service>Client` and
 * `register<Service>`. Descriptors are imported from the protoc-gen-es
 * output beside it (`<name>_pb`); nothing is duplicated.
 */
import type { DescService } from "@bufbuild/protobuf";
import { type GeneratedFile, getComments, type Schema } from "@bufbuild/protoplugin";
import { type ResolvedSettings, resolveSettings } from "./method-settings.js";
import type { PluginOptions } from "./plugin-options.js";

const RUNTIME = "@mqrpc/runtime";
const CONNECT = "@connectrpc/connect";

/** Generates TypeScript for every file of the request that declares services. */
export function generateTs(schema: Schema<PluginOptions>): void {
  rejectCommonJs(schema);
  for (const file of schema.files) {
    if (file.services.length === 0) continue;
    const f = schema.generateFile(`${file.name}_mqrpc.ts`);
    f.preamble(file);
    file.services.forEach((service, i) => {
      if (i > 0) f.print();
      generateService(f, service, schema.options);
    });
  }
}

/**
 * protoplugin would transpile to CommonJS for `js_import_style=legacy_commonjs`
 * (target js), and CommonJS cannot load the ESM-only runtime
 * (ERR_PACKAGE_PATH_NOT_EXPORTED at run time): refuse it at generation.
 */
function rejectCommonJs(schema: Schema<PluginOptions>): void {
  const commonJs = (schema.proto.parameter ?? "")
    .split(",")
    .some((p) => p.trim() === "js_import_style=legacy_commonjs");
  if (commonJs && schema.targets.includes("js")) {
    throw new Error(
      "js_import_style=legacy_commonjs is not supported: @mqrpc/runtime is ESM-only, " +
        "so CommonJS output could not load it; generate ES modules (the default)",
    );
  }
}

/** The names generated for one service. */
function generatedNames(service: DescService) {
  return {
    settings: `${service.name}Mqtt`,
    createClient: `create${service.name}Client`,
    register: `register${service.name}`,
  };
}

function generateService(f: GeneratedFile, service: DescService, options: PluginOptions): void {
  const names = generatedNames(service);
  const Service = f.importSchema(service);
  const ServiceSettings = f.import("ServiceSettings", RUNTIME).toTypeOnly();
  const MqttServer = f.import("MqttServer", RUNTIME).toTypeOnly();
  // Not Partial<ServiceImpl<…>>: for target=js+dts, protoplugin emits the
  // declarations with whichever TypeScript the user's project resolves, and
  // TypeScript 7 ships no lib .d.ts there, so a global such as Partial is a
  // "private name" (TS4078). Generated code names no lib type.
  const PartialServiceImpl = f.import("PartialServiceImpl", RUNTIME).toTypeOnly();
  const bindServiceSettings = f.import("bindServiceSettings", RUNTIME);
  const mergeServiceSettings = f.import("mergeServiceSettings", RUNTIME);
  const registerServiceSettings = f.import("registerServiceSettings", RUNTIME);
  const createClient = f.import("createMqttClient", RUNTIME);
  const Client = f.import("Client", CONNECT).toTypeOnly();
  const Transport = f.import("Transport", CONNECT).toTypeOnly();
  const what = service.typeName;

  f.print(
    f.jsDoc(
      docText(
        service,
        `MQTT settings of each method of ${what}, resolved at generation time from the ` +
          "proto options (method > service > file > plugin parameter). A field left out " +
          "takes the runtime default; `{}` means every field does. Loading this module " +
          "makes them the settings of the service wherever none are passed " +
          "(`server.service(Service, impl)`, `createClient(Service, transport)`).",
      ),
    ),
  );
  f.print(f.export("const", names.settings), ": ", ServiceSettings, "<typeof ", Service, "> = {");
  for (const method of service.methods) {
    f.print("  ", method.localName, ": ", settingsLiteral(resolveSettings(method, options)), ",");
  }
  f.print("};");
  f.print(registerServiceSettings, "(", Service, ", ", names.settings, ");");
  f.print();

  f.print(
    f.jsDoc(
      docText(
        service,
        `Creates a client of ${what} that calls over \`transport\` with the ` +
          `settings in {@link ${names.settings}}; \`options.settings\` overrides them per ` +
          "method, field by field.",
      ),
    ),
  );
  f.print(f.export("function", names.createClient), "(");
  f.print("  transport: ", Transport, ",");
  f.print(
    "  options?: { readonly settings?: ",
    ServiceSettings,
    "<typeof ",
    Service,
    "> | undefined },",
  );
  f.print("): ", Client, "<typeof ", Service, "> {");
  f.print("  return ", createClient, "(");
  f.print("    ", Service, ",");
  f.print(
    "    ",
    bindServiceSettings,
    "(transport, ",
    Service,
    ", ",
    mergeServiceSettings,
    "(",
    names.settings,
    ", options?.settings)),",
  );
  f.print("  );");
  f.print("}");
  f.print();

  f.print(
    f.jsDoc(
      docText(
        service,
        `Registers \`impl\` as ${what} on \`server\`, with the settings in ` +
          `{@link ${names.settings}}. Methods that \`impl\` leaves out answer ` +
          "UNIMPLEMENTED. Returns `server`.",
      ),
    ),
  );
  f.print(f.export("function", names.register), "(");
  f.print("  server: ", MqttServer, ",");
  f.print("  impl: ", PartialServiceImpl, "<typeof ", Service, ">,");
  f.print("): ", MqttServer, " {");
  f.print("  return server.service(", Service, ", impl, ", names.settings, ");");
  f.print("}");
}

/** `{ batchedStream: true, batchLingerMs: 5 }`, or `{}` when nothing is set. */
function settingsLiteral(settings: ResolvedSettings): string {
  const fields: string[] = [];
  if (settings.batchedStream !== undefined) fields.push(`batchedStream: ${settings.batchedStream}`);
  if (settings.batchLingerMs !== undefined) fields.push(`batchLingerMs: ${settings.batchLingerMs}`);
  return fields.length === 0 ? "{}" : `{ ${fields.join(", ")} }`;
}

/**
 * TSDoc text: what the symbol is, then the service's comments from the proto
 * source, then `@deprecated` when the service is.
 */
function docText(service: DescService, sentence: string): string {
  const parts = [wrap(sentence)];
  const comments = getComments(service);
  for (const comment of [comments.leading, comments.trailing]) {
    const text = comment === undefined ? "" : protoComment(comment);
    if (text.length > 0) parts.push(text);
  }
  if (service.deprecated) parts.push("@deprecated");
  return parts.join("\n\n");
}

/**
 * Breaks `text` into lines of at most `width` characters (80 columns with the
 * ` * ` of a doc comment), at spaces outside `{@link …}` tags.
 */
function wrap(text: string, width = 77): string {
  const lines: string[] = [];
  let line = "";
  for (const word of text.match(/(?:\{@link [^}]*\}|\S)+/g) ?? []) {
    if (line.length > 0 && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line.length > 0 ? `${line} ${word}` : word;
    }
  }
  if (line.length > 0) lines.push(line);
  return lines.join("\n");
}

/** A proto comment as doc text: one leading space per line and outer blank lines dropped. */
function protoComment(comment: string): string {
  return comment
    .split("\n")
    .map((line) => (line.startsWith(" ") ? line.slice(1) : line).trimEnd())
    .join("\n")
    .replace(/^\n+|\n+$/g, "");
}
