/**
 * Emits `<name>_mqrpc.ts` for every proto file with services: per service,
 * the resolved MQTT settings (`<Service>Mqtt`), `create<Service>Client` and
 * `register<Service>`. Descriptors are imported from the protoc-gen-es
 * output beside it (`<name>_pb`); nothing is duplicated.
 */
import type { DescFile, DescMethod, DescService } from "@bufbuild/protobuf";
import { type GeneratedFile, getComments, type Schema } from "@bufbuild/protoplugin";
import { type ResolvedSettings, resolveSettings } from "./method-settings.js";
import type { PluginOptions } from "./plugin-options.js";

const RUNTIME = "@mqrpc/runtime";
const CONNECT = "@connectrpc/connect";

/**
 * Generates TypeScript for every file of the request that declares services.
 * Throws, before anything is generated, when the parameters ask for CommonJS
 * or when two proto declarations would generate the same TypeScript name.
 */
export function generateTs(schema: Schema<PluginOptions>): void {
  rejectCommonJs(schema.proto.parameter ?? "");
  rejectNameCollisions(schema.files);
  for (const file of schema.files) {
    if (file.services.length === 0) continue;
    const f = schema.generateFile(outputName(file));
    f.preamble(file);
    file.services.forEach((service, i) => {
      if (i > 0) f.print();
      generateService(f, service, schema.options);
    });
  }
}

/** `acme/v1/widget.proto` -> `acme/v1/widget_mqrpc.ts`. */
function outputName(file: DescFile): string {
  return `${file.name}_mqrpc.ts`;
}

/**
 * Refuses `js_import_style=legacy_commonjs` (the last `js_import_style`
 * given counts, as in protoplugin) for every target: CommonJS output
 * cannot load the ESM-only runtime (ERR_PACKAGE_PATH_NOT_EXPORTED at run
 * time), and TypeScript or declarations generated under that parameter
 * would be compiled for CommonJS by the project that asked for it.
 */
function rejectCommonJs(parameter: string): void {
  let style: string | undefined;
  for (const raw of parameter.split(",")) {
    const i = raw.indexOf("=");
    if (i >= 0 && raw.slice(0, i).trim() === "js_import_style") style = raw.slice(i + 1).trim();
  }
  if (style === "legacy_commonjs") {
    throw new Error(
      "plugin parameter js_import_style=legacy_commonjs is not supported: @mqrpc/runtime is " +
        "ESM-only, so CommonJS code cannot load it; leave js_import_style out (ES modules, " +
        "the default) or set js_import_style=module",
    );
  }
}

/** A name the plugin declares at the top level of a file, and what it is. */
interface Declaration {
  readonly name: string;
  readonly role: string;
}

/** The names generated for one service, each with what it is. */
function generatedNames(service: DescService) {
  return {
    settings: { name: `${service.name}Mqtt`, role: "settings constant" },
    createClient: { name: `create${service.name}Client`, role: "client factory" },
    register: { name: `register${service.name}`, role: "registration function" },
  } satisfies Record<string, Declaration>;
}

/**
 * Refuses proto declarations whose generated TypeScript names collide, which
 * TypeScript would reject (TS2300 / TS1117): two services of one file that
 * declare the same top-level name (services `registerBar` and `BarMqtt`
 * both declare `registerBarMqtt`), and two methods of one service with the
 * same local name (`Get` and `get` are both `get`), the keys of the
 * settings constant. Names imported into the file need no check:
 * protoplugin renames an import that meets a declared or earlier imported
 * name (`createMqttClient$1`). Every collision of the request is listed.
 */
function rejectNameCollisions(files: readonly DescFile[]): void {
  const problems: string[] = [];
  for (const file of files) {
    const declared = new Map<string, { service: DescService; role: string }>();
    for (const service of file.services) {
      for (const { name, role } of Object.values(generatedNames(service))) {
        const first = declared.get(name);
        if (first === undefined) {
          declared.set(name, { service, role });
        } else {
          problems.push(
            `${first.service} and ${service} both generate the name "${name}" in ` +
              `${outputName(file)} (the ${first.role} of the first, the ${role} of the ` +
              "second); rename one of the services",
          );
        }
      }
      const keys = new Map<string, DescMethod>();
      for (const method of service.methods) {
        const first = keys.get(method.localName);
        if (first === undefined) {
          keys.set(method.localName, method);
        } else {
          problems.push(
            `${first} and ${method} both generate the method key "${method.localName}" ` +
              `(in ${generatedNames(service).settings.name} of ${outputName(file)}, and in ` +
              "the client and implementation types of the service); rename one of the methods",
          );
        }
      }
    }
  }
  if (problems.length > 0) {
    throw new Error(`generated names collide:\n${problems.join("\n")}`);
  }
}

function generateService(f: GeneratedFile, service: DescService, options: PluginOptions): void {
  const { settings, createClient, register } = generatedNames(service);
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
  const createMqttClient = f.import("createMqttClient", RUNTIME);
  const Client = f.import("Client", CONNECT).toTypeOnly();
  const Transport = f.import("Transport", CONNECT).toTypeOnly();
  const what = service.typeName;
  // A parameter must not shadow the imported descriptor, which the
  // signatures and bodies name: a service called `transport` gets a
  // parameter `transport_`.
  const parameter = (name: string): string => (name === Service.name ? `${name}_` : name);
  const transport = parameter("transport");
  const opts = parameter("options");
  const server = parameter("server");
  const impl = parameter("impl");

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
  f.print(f.export("const", settings.name), ": ", ServiceSettings, "<typeof ", Service, "> = {");
  for (const method of service.methods) {
    // protoc-gen-es documents the method on the descriptor's type, which
    // the settings' and the client's members take over; the entry repeats
    // it only where it matters to a reader of this file: a deprecated method.
    if (method.deprecated) f.print(f.jsDoc(method, "  "));
    f.print(
      "  ",
      propertyKey(method.localName),
      ": ",
      settingsLiteral(resolveSettings(method, options)),
      ",",
    );
  }
  f.print("};");
  f.print(registerServiceSettings, "(", Service, ", ", settings.name, ");");
  f.print();

  f.print(
    f.jsDoc(
      docText(
        service,
        `Creates a client of ${what} that calls over \`${transport}\` with the ` +
          `settings in {@link ${settings.name}}; \`${opts}.settings\` overrides them per ` +
          "method, field by field.",
      ),
    ),
  );
  f.print(f.export("function", createClient.name), "(");
  f.print("  ", transport, ": ", Transport, ",");
  f.print(
    "  ",
    opts,
    "?: { readonly settings?: ",
    ServiceSettings,
    "<typeof ",
    Service,
    "> | undefined },",
  );
  f.print("): ", Client, "<typeof ", Service, "> {");
  f.print("  return ", createMqttClient, "(");
  f.print("    ", Service, ",");
  f.print(
    "    ",
    bindServiceSettings,
    "(",
    transport,
    ", ",
    Service,
    ", ",
    mergeServiceSettings,
    "(",
    settings.name,
    ", ",
    opts,
    "?.settings)),",
  );
  f.print("  );");
  f.print("}");
  f.print();

  f.print(
    f.jsDoc(
      docText(
        service,
        `Registers \`${impl}\` as ${what} on \`${server}\`, with the settings in ` +
          `{@link ${settings.name}}. Methods that \`${impl}\` leaves out answer ` +
          `UNIMPLEMENTED. Returns \`${server}\`.`,
      ),
    ),
  );
  f.print(f.export("function", register.name), "(");
  f.print("  ", server, ": ", MqttServer, ",");
  f.print("  ", impl, ": ", PartialServiceImpl, "<typeof ", Service, ">,");
  f.print("): ", MqttServer, " {");
  f.print("  return ", server, ".service(", Service, ", ", impl, ", ", settings.name, ");");
  f.print("}");
}

/**
 * A method's key in the settings object literal. `__proto__: …` (quoted or
 * not) would set the literal's prototype instead of defining a property, so
 * that key is computed. Other names of Object.prototype need nothing:
 * protobuf-es already renames `constructor`, `toString`, `toJSON` and
 * `valueOf` (`constructor$`…), and any other (`hasOwnProperty`…) is a
 * plain own property in a literal.
 */
function propertyKey(localName: string): string {
  return localName === "__proto__" ? '["__proto__"]' : localName;
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
