/**
 * Emits `<name>_mqrpc.ts` for every proto file with services: per service,
 * the resolved MQTT settings, `create<Service>Client` and
 * `register<Service>`. Descriptors come from the protoc-gen-es output next
 * to it; nothing is duplicated.
 */
import type { DescService } from "@bufbuild/protobuf";
import { type GeneratedFile, getComments, type Schema } from "@bufbuild/protoplugin";
import { resolveSettings } from "./method-settings.js";
import type { PluginOptions } from "./plugin-options.js";

/** Generates TypeScript for every file of the request that declares services. */
export function generateTs(schema: Schema<PluginOptions>): void {
  for (const file of schema.files) {
    if (file.services.length === 0) continue;
    const f = schema.generateFile(`${file.name}_mqrpc.ts`);
    f.preamble(file);
    for (const service of file.services) {
      generateService(f, service, schema.options);
    }
  }
}

function generateService(f: GeneratedFile, service: DescService, options: PluginOptions): void {
  const Service = f.importSchema(service);
  const ServiceSettings = f.import("ServiceSettings", "@mqrpc/runtime", true);
  const MqttServer = f.import("MqttServer", "@mqrpc/runtime", true);
  const bindServiceSettings = f.import("bindServiceSettings", "@mqrpc/runtime");
  const mergeServiceSettings = f.import("mergeServiceSettings", "@mqrpc/runtime");
  const createClient = f.import("createClient", "@connectrpc/connect");
  const Client = f.import("Client", "@connectrpc/connect", true);
  const ServiceImpl = f.import("ServiceImpl", "@connectrpc/connect", true);
  const Transport = f.import("Transport", "@connectrpc/connect", true);
  const settingsName = `${service.name}MqttSettings`;

  f.print(
    f.jsDoc(
      `MQTT settings of ${service.typeName}, per method, resolved from the proto options ` +
        "(method > service > file > plugin parameter). Unset fields take the runtime default.",
    ),
  );
  f.print(f.export("const", settingsName), ": ", ServiceSettings, "<typeof ", Service, "> = {");
  for (const method of service.methods) {
    const s = resolveSettings(method, options);
    const fields: string[] = [];
    if (s.batchedStream !== undefined) fields.push(`batchedStream: ${s.batchedStream}`);
    if (s.batchLingerMs !== undefined) fields.push(`batchLingerMs: ${s.batchLingerMs}`);
    f.print("  ", method.localName, ": {", fields.length > 0 ? ` ${fields.join(", ")} ` : "", "},");
  }
  f.print("};");
  f.print();

  const serviceDoc = getComments(service).leading?.trim();
  f.print(
    f.jsDoc(
      `Creates a typed client of ${service.typeName} that calls over \`transport\` ` +
        `with the generated MQTT settings (${settingsName}); \`options.settings\` overrides them per method.` +
        (serviceDoc ? `\n\n${serviceDoc}` : ""),
    ),
  );
  f.print(f.export("function", `create${service.name}Client`), "(");
  f.print("  transport: ", Transport, ",");
  f.print("  options?: { readonly settings?: ", ServiceSettings, "<typeof ", Service, "> },");
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
    settingsName,
    ", options?.settings)),",
  );
  f.print("  );");
  f.print("}");
  f.print();

  f.print(
    f.jsDoc(
      `Registers an implementation of ${service.typeName} on an mqrpc server, with the generated MQTT settings. ` +
        "Methods left out answer UNIMPLEMENTED.",
    ),
  );
  f.print(f.export("function", `register${service.name}`), "(");
  f.print("  server: ", MqttServer, ",");
  f.print("  impl: Partial<", ServiceImpl, "<typeof ", Service, ">>,");
  f.print("): ", MqttServer, " {");
  f.print("  return server.service(", Service, ", impl, ", settingsName, ");");
  f.print("}");
  f.print();
}
