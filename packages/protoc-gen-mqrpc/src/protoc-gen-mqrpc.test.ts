/**
 * In-process plugin tests: inline proto is compiled to a FileDescriptorSet by
 * the repository's buf (node_modules/.bin/buf, with mqrpc/v1/options.proto
 * beside it), wrapped in a CodeGeneratorRequest and handed to the plugin
 * object; the generated files are checked line by line. Where it matters
 * that the output compiles or runs, protoc-gen-es generates the `_pb` files
 * beside it, the TypeScript language service checks both under the
 * repository's strict settings, and vitest imports them.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { create, type DescService, fromBinary } from "@bufbuild/protobuf";
import {
  type CodeGeneratorRequest,
  CodeGeneratorRequestSchema,
  type FileDescriptorProto,
  FileDescriptorSetSchema,
} from "@bufbuild/protobuf/wkt";
import { protocGenEs } from "@bufbuild/protoc-gen-es/dist/cjs/src/protoc-gen-es-plugin.js";
import { settingsFromDescriptor } from "@mqrpc/runtime";
import ts from "typescript";
import { afterAll, describe, expect, it } from "vitest";
import { protocGenMqrpc } from "./protoc-gen-mqrpc.js";

const pkg = join(dirname(fileURLToPath(import.meta.url)), "..");
const repo = join(pkg, "../..");
const buf = join(repo, "node_modules/.bin/buf");
const version = (JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")) as { version: string })
  .version;

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

const compiled = new Map<string, FileDescriptorProto[]>();

/**
 * Compiles `files` (path -> proto source) with buf into file descriptors,
 * imports included (mqrpc/v1/options.proto, google/protobuf/descriptor.proto)
 * and with source info, so comments reach the plugin. buf must succeed
 * without a word on stderr: a warning fails the test instead of cluttering
 * its output.
 */
function compile(files: Record<string, string>): FileDescriptorProto[] {
  const key = JSON.stringify(files);
  const cached = compiled.get(key);
  if (cached !== undefined) return cached;
  const dir = mkdtempSync(join(tmpdir(), "mqrpc-plugin-"));
  dirs.push(dir);
  writeFileSync(join(dir, "buf.yaml"), "version: v2\n");
  mkdirSync(join(dir, "mqrpc/v1"), { recursive: true });
  copyFileSync(join(repo, "proto/mqrpc/v1/options.proto"), join(dir, "mqrpc/v1/options.proto"));
  for (const [path, source] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), source);
  }
  const built = spawnSync(buf, ["build", dir, "--as-file-descriptor-set", "-o", "-#format=binpb"], {
    maxBuffer: 64 << 20,
  });
  expect({ status: built.status, stderr: built.stderr.toString() }).toEqual({
    status: 0,
    stderr: "",
  });
  const set = fromBinary(FileDescriptorSetSchema, built.stdout);
  compiled.set(key, set.file);
  return set.file;
}

/** A request to generate every file of `files`, with `parameter`. */
function request(files: Record<string, string>, parameter: string): CodeGeneratorRequest {
  return create(CodeGeneratorRequestSchema, {
    protoFile: compile(files),
    fileToGenerate: Object.keys(files),
    parameter,
  });
}

/** Runs the plugin on `files` with `parameter`, generating for every file of `files`. */
function generate(files: Record<string, string>, parameter: string): Record<string, string> {
  const response = protocGenMqrpc.run(request(files, parameter));
  expect(response.error ?? "").toBe("");
  return Object.fromEntries(response.file.map((f) => [f.name, f.content]));
}

/**
 * The plugin's message for `files`: what protoc / buf print when the
 * plugin throws.
 */
function generationError(files: Record<string, string>, parameter = "target=ts"): string {
  try {
    generate(files, parameter);
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
  throw new Error("the plugin generated code instead of failing");
}

/**
 * protoc-gen-es's and this plugin's output for `files` and the options
 * proto they import, as a user's buf.gen.yaml with both plugins produces
 * it: `shared` goes to both, `own` (this plugin's parameters) to this
 * plugin only. (protoc-gen-es's plugin object keeps transpiling for the
 * targets of its earlier runs, so only the files of the target asked for
 * are kept.)
 */
function generateWithEs(
  files: Record<string, string>,
  shared: string,
  own = "",
): Record<string, string> {
  const esRequest = create(CodeGeneratorRequestSchema, {
    protoFile: compile(files),
    fileToGenerate: [...Object.keys(files), "mqrpc/v1/options.proto"],
    parameter: shared,
  });
  // protoc-gen-es (pinned to 2.13) is typed with its own @bufbuild/protobuf,
  // whose Edition enum lacks a value of this one's; the request is the
  // same plain data either way.
  const es = protocGenEs.run(esRequest as unknown as Parameters<typeof protocGenEs.run>[0]);
  expect(es.error ?? "").toBe("");
  const extension = /target=(\w+)/.exec(shared)?.[1] === "js" ? ".js" : ".ts";
  return {
    ...Object.fromEntries(
      es.file.filter((f) => f.name.endsWith(extension)).map((f) => [f.name, f.content]),
    ),
    ...generate(files, own === "" ? shared : `${shared},${own}`),
  };
}

/**
 * Writes `files` (path -> content) into a new folder under the repository's
 * .tmp/ (gitignored), where `@bufbuild/protobuf` and `@connectrpc/connect`
 * resolve from the repository's node_modules; returns the folder.
 */
function writeProject(files: Record<string, string>): string {
  const root = join(repo, ".tmp");
  mkdirSync(root, { recursive: true });
  const dir = mkdtempSync(join(root, "protoc-gen-mqrpc-test-"));
  dirs.push(dir);
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
  return dir;
}

/** What the TypeScript language service says about the TypeScript files of `files`. */
interface TypeCheck {
  /** Syntactic and semantic errors, as `path:line TSnnnn message`. */
  readonly errors: string[];
  /** Uses of deprecated symbols (TS6385, TS6387) in `use.ts`, as `line name`. */
  readonly deprecated: string[];
}

/**
 * Type-checks the TypeScript files of `files` with the repository's
 * TypeScript and strict settings (tsconfig.base.json), `@mqrpc/runtime`
 * resolved to its sources.
 */
function typeCheck(files: Record<string, string>): TypeCheck {
  const dir = writeProject(files);
  const names = Object.keys(files)
    .filter((path) => path.endsWith(".ts"))
    .map((path) => join(dir, path));
  const options: ts.CompilerOptions = {
    strict: true,
    noUncheckedIndexedAccess: true,
    exactOptionalPropertyTypes: true,
    verbatimModuleSyntax: true,
    isolatedModules: true,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    lib: ["lib.es2023.d.ts"],
    types: ["node"],
    skipLibCheck: true,
    noEmit: true,
    paths: { "@mqrpc/runtime": [join(repo, "packages/runtime/src/index.ts")] },
  };
  const host: ts.LanguageServiceHost = {
    getScriptFileNames: () => names,
    getScriptVersion: () => "1",
    getScriptSnapshot: (file) => {
      const text = ts.sys.readFile(file);
      return text === undefined ? undefined : ts.ScriptSnapshot.fromString(text);
    },
    getCurrentDirectory: () => dir,
    getCompilationSettings: () => options,
    getDefaultLibFileName: ts.getDefaultLibFilePath,
    fileExists: ts.sys.fileExists,
    readFile: ts.sys.readFile,
    readDirectory: ts.sys.readDirectory,
    directoryExists: ts.sys.directoryExists,
    getDirectories: ts.sys.getDirectories,
  };
  const service = ts.createLanguageService(host, documents);
  const format = (d: ts.Diagnostic, code: boolean) => {
    const where = d.file === undefined ? "" : d.file.fileName.slice(dir.length + 1);
    const line =
      d.file === undefined || d.start === undefined
        ? 0
        : d.file.getLineAndCharacterOfPosition(d.start).line + 1;
    const message = ts.flattenDiagnosticMessageText(d.messageText, "\n");
    return `${where}:${line} ${code ? `TS${d.code} ` : ""}${message}`;
  };
  const result: TypeCheck = {
    errors: names.flatMap((name) =>
      [...service.getSyntacticDiagnostics(name), ...service.getSemanticDiagnostics(name)].map((d) =>
        format(d, true),
      ),
    ),
    deprecated: service
      .getSuggestionDiagnostics(join(dir, "use.ts"))
      .filter((d) => d.code === 6385 || d.code === 6387)
      .map((d) => {
        const message = ts.flattenDiagnosticMessageText(d.messageText, "\n");
        return format(d, false).replace(
          message,
          /'([^']*)' is deprecated\.$/.exec(message)?.[1] ?? message,
        );
      }),
  };
  service.dispose();
  return result;
}

/** Shared by every language service of the run: lib and node_modules files are parsed once. */
const documents = ts.createDocumentRegistry();

/** The body lines of the `<service>Mqtt` constant in `content`. */
function settingsLines(content: string | undefined, service: string): string[] {
  const lines = (content ?? "").split("\n");
  const start = lines.indexOf(
    `export const ${service}Mqtt: ServiceSettings<typeof ${service}> = {`,
  );
  expect(start, `${service}Mqtt in\n${content}`).toBeGreaterThanOrEqual(0);
  return lines.slice(start + 1, lines.indexOf("};", start));
}

const header = (pkgName = "acme.v1") =>
  `syntax = "proto3";\npackage ${pkgName};\nimport "mqrpc/v1/options.proto";\nmessage M { string s = 1; }\n`;

const widget = {
  "acme/v1/widget.proto": `${header()}
// Talks to a widget.
//
// Second paragraph.
service WidgetService {
  rpc Get(M) returns (M);
  rpc WatchAll(M) returns (stream M) {
    option (mqrpc.v1.method_options).batched_stream = true;
  }
  rpc Upload(stream M) returns (M);
  rpc Chat(stream M) returns (stream M);
  // Use Get.
  rpc GetOld(M) returns (M) {
    option deprecated = true;
  }
}

service Gadget {
  option deprecated = true;
  rpc Get(M) returns (M);
}
`,
};

describe("protoc-gen-mqrpc", () => {
  it("generates settings, client factory and registration per service", () => {
    const files = generate(widget, "target=ts,import_extension=js");
    expect(Object.keys(files)).toEqual(["acme/v1/widget_mqrpc.ts"]);
    expect(files["acme/v1/widget_mqrpc.ts"]?.split("\n")).toEqual([
      `// @generated by protoc-gen-mqrpc v${version} with parameter "target=ts,import_extension=js"`,
      "// @generated from file acme/v1/widget.proto (package acme.v1, syntax proto3)",
      "/* eslint-disable */",
      "",
      'import type { MqttServer, PartialServiceImpl, ServiceSettings } from "@mqrpc/runtime";',
      'import { bindServiceSettings, createMqttClient, mergeServiceSettings, registerServiceSettings } from "@mqrpc/runtime";',
      'import { Gadget, WidgetService } from "./widget_pb.js";',
      'import type { Client, Transport } from "@connectrpc/connect";',
      "",
      "/**",
      " * MQTT settings of each method of acme.v1.WidgetService, resolved at generation",
      " * time from the proto options (method > service > file > plugin parameter). A",
      " * field left out takes the runtime default; `{}` means every field does.",
      " * Loading this module makes them the settings of the service wherever none are",
      " * passed (`server.service(Service, impl)`, `createClient(Service, transport)`).",
      " *",
      " * Talks to a widget.",
      " *",
      " * Second paragraph.",
      " */",
      "export const WidgetServiceMqtt: ServiceSettings<typeof WidgetService> = {",
      "  get: {},",
      "  watchAll: { batchedStream: true },",
      "  upload: {},",
      "  chat: {},",
      "  /**",
      "   * Use Get.",
      "   *",
      "   * @generated from rpc acme.v1.WidgetService.GetOld",
      "   * @deprecated",
      "   */",
      "  getOld: {},",
      "};",
      "registerServiceSettings(WidgetService, WidgetServiceMqtt);",
      "",
      "/**",
      " * Creates a client of acme.v1.WidgetService that calls over `transport` with",
      " * the settings in {@link WidgetServiceMqtt}; `options.settings` overrides them",
      " * per method, field by field.",
      " *",
      " * Talks to a widget.",
      " *",
      " * Second paragraph.",
      " */",
      "export function createWidgetServiceClient(",
      "  transport: Transport,",
      "  options?: { readonly settings?: ServiceSettings<typeof WidgetService> | undefined },",
      "): Client<typeof WidgetService> {",
      "  return createMqttClient(",
      "    WidgetService,",
      "    bindServiceSettings(transport, WidgetService, mergeServiceSettings(WidgetServiceMqtt, options?.settings)),",
      "  );",
      "}",
      "",
      "/**",
      " * Registers `impl` as acme.v1.WidgetService on `server`, with the settings in",
      " * {@link WidgetServiceMqtt}. Methods that `impl` leaves out answer",
      " * UNIMPLEMENTED. Returns `server`.",
      " *",
      " * Talks to a widget.",
      " *",
      " * Second paragraph.",
      " */",
      "export function registerWidgetService(",
      "  server: MqttServer,",
      "  impl: PartialServiceImpl<typeof WidgetService>,",
      "): MqttServer {",
      "  return server.service(WidgetService, impl, WidgetServiceMqtt);",
      "}",
      "",
      "/**",
      " * MQTT settings of each method of acme.v1.Gadget, resolved at generation time",
      " * from the proto options (method > service > file > plugin parameter). A field",
      " * left out takes the runtime default; `{}` means every field does. Loading this",
      " * module makes them the settings of the service wherever none are passed",
      " * (`server.service(Service, impl)`, `createClient(Service, transport)`).",
      " *",
      " * @deprecated",
      " */",
      "export const GadgetMqtt: ServiceSettings<typeof Gadget> = {",
      "  get: {},",
      "};",
      "registerServiceSettings(Gadget, GadgetMqtt);",
      "",
      "/**",
      " * Creates a client of acme.v1.Gadget that calls over `transport` with the",
      " * settings in {@link GadgetMqtt}; `options.settings` overrides them per method,",
      " * field by field.",
      " *",
      " * @deprecated",
      " */",
      "export function createGadgetClient(",
      "  transport: Transport,",
      "  options?: { readonly settings?: ServiceSettings<typeof Gadget> | undefined },",
      "): Client<typeof Gadget> {",
      "  return createMqttClient(",
      "    Gadget,",
      "    bindServiceSettings(transport, Gadget, mergeServiceSettings(GadgetMqtt, options?.settings)),",
      "  );",
      "}",
      "",
      "/**",
      " * Registers `impl` as acme.v1.Gadget on `server`, with the settings in",
      " * {@link GadgetMqtt}. Methods that `impl` leaves out answer UNIMPLEMENTED.",
      " * Returns `server`.",
      " *",
      " * @deprecated",
      " */",
      "export function registerGadget(",
      "  server: MqttServer,",
      "  impl: PartialServiceImpl<typeof Gadget>,",
      "): MqttServer {",
      "  return server.service(Gadget, impl, GadgetMqtt);",
      "}",
      "",
    ]);
  });

  it("imports descriptors from the protoc-gen-es file beside it, honouring import_extension", () => {
    expect(generate(widget, "target=ts")["acme/v1/widget_mqrpc.ts"]).toContain(
      'import { Gadget, WidgetService } from "./widget_pb";\n',
    );
  });

  describe("resolves each setting: method > service > file > plugin parameter", () => {
    const levels = {
      "acme/v1/levels.proto": `${header()}
option (mqrpc.v1.file_options).batch_linger_ms = 9;
service FileLevel {
  rpc A(M) returns (stream M);
}
service ServiceLevel {
  option (mqrpc.v1.service_options).batched_stream = false;
  option (mqrpc.v1.service_options).batch_linger_ms = 4;
  rpc A(M) returns (stream M);
  rpc B(M) returns (stream M) {
    option (mqrpc.v1.method_options).batched_stream = true;
  }
  rpc C(stream M) returns (M) {
    option (mqrpc.v1.method_options).batched_stream = true;
    option (mqrpc.v1.method_options).batch_linger_ms = 0;
  }
}`,
      "acme/v1/bare.proto": `${header("acme.bare.v1")}
service Bare {
  rpc A(M) returns (stream M);
}`,
    };

    it("with plugin parameters", () => {
      const files = generate(levels, "target=ts,batched_stream=true,batch_linger_ms=3");
      // The parameter sets batching; the file's linger beats the parameter's.
      expect(settingsLines(files["acme/v1/levels_mqrpc.ts"], "FileLevel")).toEqual([
        "  a: { batchedStream: true, batchLingerMs: 9 },",
      ]);
      // The service beats file and parameter; the method beats the service,
      // field by field (an explicit 0 counts as set).
      expect(settingsLines(files["acme/v1/levels_mqrpc.ts"], "ServiceLevel")).toEqual([
        "  a: { batchedStream: false, batchLingerMs: 4 },",
        "  b: { batchedStream: true, batchLingerMs: 4 },",
        "  c: { batchedStream: true, batchLingerMs: 0 },",
      ]);
      // Nothing set in the proto: the parameters apply.
      expect(settingsLines(files["acme/v1/bare_mqrpc.ts"], "Bare")).toEqual([
        "  a: { batchedStream: true, batchLingerMs: 3 },",
      ]);
    });

    it("without plugin parameters", () => {
      const files = generate(levels, "target=ts");
      expect(settingsLines(files["acme/v1/levels_mqrpc.ts"], "FileLevel")).toEqual([
        "  a: { batchLingerMs: 9 },",
      ]);
      expect(settingsLines(files["acme/v1/levels_mqrpc.ts"], "ServiceLevel")).toEqual([
        "  a: { batchedStream: false, batchLingerMs: 4 },",
        "  b: { batchedStream: true, batchLingerMs: 4 },",
        "  c: { batchedStream: true, batchLingerMs: 0 },",
      ]);
      // Nothing set anywhere: every field takes the runtime default.
      expect(settingsLines(files["acme/v1/bare_mqrpc.ts"], "Bare")).toEqual(["  a: {},"]);
    });

    it("with one parameter only", () => {
      const files = generate(levels, "target=ts,batched_stream=false");
      expect(settingsLines(files["acme/v1/bare_mqrpc.ts"], "Bare")).toEqual([
        "  a: { batchedStream: false },",
      ]);
      expect(settingsLines(files["acme/v1/levels_mqrpc.ts"], "FileLevel")).toEqual([
        "  a: { batchedStream: false, batchLingerMs: 9 },",
      ]);
    });
  });

  it("generates nothing for a file without services", () => {
    const files = generate(
      { "acme/messages/v1/messages.proto": header("acme.messages.v1"), ...widget },
      "target=ts,import_extension=js",
    );
    expect(Object.keys(files)).toEqual(["acme/v1/widget_mqrpc.ts"]);
    expect(generate({ "acme/v1/messages.proto": header() }, "target=ts")).toEqual({});
  });

  it("transpiles to JavaScript and declarations for target=js+dts", () => {
    const files = generate(widget, "target=js+dts,import_extension=js");
    expect(Object.keys(files).sort()).toEqual([
      "acme/v1/widget_mqrpc.d.ts",
      "acme/v1/widget_mqrpc.js",
    ]);
    expect(files["acme/v1/widget_mqrpc.js"]).toContain(
      "export function registerWidgetService(server, impl) {\n" +
        "    return server.service(WidgetService, impl, WidgetServiceMqtt);\n}",
    );
    expect(files["acme/v1/widget_mqrpc.d.ts"]).toContain(
      "export declare const WidgetServiceMqtt: ServiceSettings<typeof WidgetService>;",
    );
  });

  it("emits declarations without TypeScript's lib (a project on TypeScript 7 transpiles so)", () => {
    // For target=js+dts protoplugin emits with its own TypeScript (5.4)
    // but reads the lib .d.ts files from the project's top-level typescript
    // package; TypeScript 7 ships none, so a generated declaration that
    // names a global type (Partial, Promise…) fails with TS4078. Emit the
    // generated TypeScript as protoplugin does, with no lib at all.
    const ts: typeof import("typescript") = createRequire(
      createRequire(import.meta.url).resolve("@bufbuild/protoplugin"),
    )("typescript");
    const name = "acme/v1/widget_mqrpc.ts";
    const source = generate(widget, "target=ts,import_extension=js")[name] ?? "";
    const options: import("typescript").CompilerOptions = {
      noLib: true,
      noResolve: true,
      declaration: true,
      emitDeclarationOnly: true,
      module: ts.ModuleKind.ES2020,
      target: ts.ScriptTarget.ES2017,
    };
    const host = ts.createCompilerHost(options);
    host.getSourceFile = (file, languageVersion) =>
      file === name ? ts.createSourceFile(file, source, languageVersion) : undefined;
    host.fileExists = (file) => file === name;
    host.readFile = (file) => (file === name ? source : undefined);
    host.writeFile = () => {};
    const emitted = ts.createProgram([name], options, host).emit();
    expect(
      emitted.diagnostics.map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n")),
    ).toEqual([]);
  });

  it("rejects js_import_style=legacy_commonjs for every target (the runtime is ESM-only)", () => {
    for (const target of ["ts", "js", "dts", "js+dts"]) {
      expect(() => generate(widget, `target=${target},js_import_style=legacy_commonjs`)).toThrow(
        "plugin parameter js_import_style=legacy_commonjs is not supported: @mqrpc/runtime is " +
          "ESM-only, so CommonJS code cannot load it; leave js_import_style out (ES modules, " +
          "the default) or set js_import_style=module",
      );
    }
    // The last js_import_style counts, as in protoplugin.
    expect(
      Object.keys(
        generate(widget, "target=ts,js_import_style=legacy_commonjs,js_import_style=module"),
      ),
    ).toEqual(["acme/v1/widget_mqrpc.ts"]);
    expect(() =>
      generate(widget, "target=ts,js_import_style=module,js_import_style=legacy_commonjs"),
    ).toThrow("js_import_style=legacy_commonjs is not supported");
  });

  it("generates only the requested targets when one plugin object runs again", () => {
    // protoplugin's plugin object keeps transpiling for the targets of its
    // earlier runs; protocGenMqrpc starts each run afresh.
    expect(Object.keys(generate(widget, "target=js"))).toEqual(["acme/v1/widget_mqrpc.js"]);
    expect(Object.keys(generate(widget, "target=dts"))).toEqual(["acme/v1/widget_mqrpc.d.ts"]);
    expect(Object.keys(generate(widget, "target=ts"))).toEqual(["acme/v1/widget_mqrpc.ts"]);
  });

  it("rejects an unknown parameter, naming it and the accepted ones", () => {
    expect(() => generate(widget, "target=ts,batching=yes")).toThrow(
      /^invalid option "batching=yes": unknown plugin parameter "batching": protoc-gen-mqrpc accepts batched_stream, batch_linger_ms, and the standard parameters target, /,
    );
  });

  it("rejects invalid values, naming the parameter", () => {
    expect(() => generate(widget, "target=ts,batched_stream=maybe")).toThrow(
      'invalid value "maybe" for plugin parameter batched_stream: use true or false',
    );
    expect(() => generate(widget, "target=ts,batch_linger_ms=-1")).toThrow(
      'invalid value "-1" for plugin parameter batch_linger_ms: use a non-negative integer',
    );
  });

  describe("names that collide after generation", () => {
    it("fails, naming both methods, when two methods of a service get one key", () => {
      const message = generationError({
        "acme/v1/keys.proto": `${header()}
service Keys {
  rpc Get(M) returns (M);
  rpc get(M) returns (M);
  rpc ToString(M) returns (M);
  rpc toString(M) returns (M);
}`,
      });
      expect(message.split("\n")).toEqual([
        "generated names collide:",
        'rpc acme.v1.Keys.Get and rpc acme.v1.Keys.get both generate the method key "get" ' +
          "(in KeysMqtt of acme/v1/keys_mqrpc.ts, and in the client and implementation types " +
          "of the service); rename one of the methods",
        'rpc acme.v1.Keys.ToString and rpc acme.v1.Keys.toString both generate the method key "toString$" ' +
          "(in KeysMqtt of acme/v1/keys_mqrpc.ts, and in the client and implementation types " +
          "of the service); rename one of the methods",
      ]);
    });

    it("fails, naming both services, when two services of a file declare one name, listing every file", () => {
      // <Service>Mqtt of registerBar is register<Service> of BarMqtt; the
      // other generated names (create<Service>Client, and the same kind of
      // name of two services) cannot meet.
      const message = generationError({
        "acme/v1/bar.proto": `${header()}
service registerBar { rpc A(M) returns (M); }
service BarMqtt { rpc A(M) returns (M); }`,
        "acme/other/v1/baz.proto": `${header("acme.other.v1")}
service BazMqtt { rpc A(M) returns (M); }
service registerBaz { rpc A(M) returns (M); }`,
      });
      expect(message.split("\n")).toEqual([
        "generated names collide:",
        'service acme.other.v1.BazMqtt and service acme.other.v1.registerBaz both generate the name "registerBazMqtt" ' +
          "in acme/other/v1/baz_mqrpc.ts (the registration function of the first, the settings " +
          "constant of the second); rename one of the services",
        'service acme.v1.registerBar and service acme.v1.BarMqtt both generate the name "registerBarMqtt" ' +
          "in acme/v1/bar_mqrpc.ts (the settings constant of the first, the registration " +
          "function of the second); rename one of the services",
      ]);
    });

    it("lets protoplugin rename an import that meets a generated name, and renames a parameter that would shadow the descriptor", () => {
      const files = generate(edge, "target=ts,import_extension=js");
      const content = files["acme/imports/v1/imports_mqrpc.ts"] ?? "";
      expect(content).toContain(
        'import { bindServiceSettings, createMqttClient as createMqttClient$1, mergeServiceSettings, registerServiceSettings as registerServiceSettings$1 } from "@mqrpc/runtime";\n',
      );
      expect(content).toContain(
        "export function createtransportClient(\n" +
          "  transport_: Transport,\n" +
          "  options?: { readonly settings?: ServiceSettings<typeof transport> | undefined },\n" +
          "): Client<typeof transport> {\n" +
          "  return createMqttClient$1(\n" +
          "    transport,\n" +
          "    bindServiceSettings(transport_, transport, mergeServiceSettings(transportMqtt, options?.settings)),\n",
      );
      expect(content).toContain(
        "export function registerserver(\n" +
          "  server_: MqttServer,\n" +
          "  impl: PartialServiceImpl<typeof server>,\n" +
          "): MqttServer {\n" +
          "  return server_.service(server, impl, serverMqtt);\n",
      );
    });

    it("compiles under strict settings with protoc-gen-es's output beside it", () => {
      expect(edgeCheck().errors).toEqual([]);
    });
  });

  describe("methods named like Object.prototype members", () => {
    it("keys __proto__ by a computed name, the others by their local names", () => {
      const files = generate(edge, "target=ts,batch_linger_ms=7");
      expect(settingsLines(files["acme/names/v1/names_mqrpc.ts"], "Names")).toEqual([
        '  ["__proto__"]: { batchedStream: true, batchLingerMs: 7 },',
        "  constructor$: { batchLingerMs: 7 },",
        "  toString$: { batchLingerMs: 7 },",
        "  hasOwnProperty: { batchLingerMs: 7 },",
        "  valueOf$: { batchLingerMs: 7 },",
        "  isPrototypeOf: { batchLingerMs: 7 },",
      ]);
    });

    for (const target of ["ts", "js"]) {
      it(`become own properties of the settings, which registration reads (target=${target})`, async () => {
        const dir = writeProject(
          generateWithEs(names, `target=${target},import_extension=js`, "batch_linger_ms=7"),
        );
        const load = async (name: string): Promise<Record<string, unknown>> =>
          import(pathToFileURL(join(dir, `acme/names/v1/${name}.${target}`)).href);
        const { NamesMqtt } = await load("names_mqrpc");
        const { Names } = (await load("names_pb")) as { Names: DescService };
        expect(Object.getPrototypeOf(NamesMqtt)).toBe(Object.prototype);
        expect(Object.keys(NamesMqtt as object)).toEqual([
          "__proto__",
          "constructor$",
          "toString$",
          "hasOwnProperty",
          "valueOf$",
          "isPrototypeOf",
        ]);
        expect(Object.getOwnPropertyDescriptor(NamesMqtt, "__proto__")?.value).toEqual({
          batchedStream: true,
          batchLingerMs: 7,
        });
        // Loading the module registered the settings: linger 7 comes from
        // the literal (the descriptor's options would give 5).
        expect(
          Object.fromEntries(Names.methods.map((m) => [m.name, settingsFromDescriptor(m)])),
        ).toEqual({
          ["__proto__"]: { batchedStream: true, batchLingerMs: 7 },
          constructor: { batchedStream: false, batchLingerMs: 7 },
          toString: { batchedStream: false, batchLingerMs: 7 },
          hasOwnProperty: { batchedStream: false, batchLingerMs: 7 },
          valueOf: { batchedStream: false, batchLingerMs: 7 },
          isPrototypeOf: { batchedStream: false, batchLingerMs: 7 },
        });
      });
    }
  });

  it("carries deprecation to the settings entries and, through the descriptor types, to client members", () => {
    // The entry's TSDoc (see the first test) is for readers of the file;
    // what a user's editor flags comes from the `_pb` types protoc-gen-es
    // writes, which the settings and the client take their members from.
    // A deprecated service deprecates all three generated declarations.
    expect(edgeCheck().deprecated).toEqual([
      "use.ts:11 getOld",
      "use.ts:12 getOld",
      "use.ts:13 gen.createGadgetClient",
      "use.ts:14 gen.registerGadget",
      "use.ts:15 GadgetMqtt",
    ]);
  });
});

/** Services and methods whose generated names meet imported or built-in ones. */
const names = {
  "acme/names/v1/names.proto": `${header("acme.names.v1")}
service Names {
  rpc __proto__(M) returns (stream M) {
    option (mqrpc.v1.method_options).batched_stream = true;
  }
  rpc constructor(M) returns (M);
  rpc toString(M) returns (M);
  rpc hasOwnProperty(M) returns (M);
  rpc valueOf(M) returns (M);
  rpc isPrototypeOf(M) returns (M);
}`,
};

/** Service names that are the parameters' or the imports' names of the generated code. */
const importedNames = [
  "transport",
  "options",
  "server",
  "impl",
  "Mqtt",
  "ServiceSettings",
  "Foo",
  "FooMqtt",
  "Client",
  "Transport",
  "MqttServer",
  "PartialServiceImpl",
];

const edge = {
  ...widget,
  ...names,
  "acme/imports/v1/imports.proto": `${header("acme.imports.v1")}
${importedNames.map((name) => `service ${name} { rpc A(M) returns (M); }`).join("\n")}`,
};

/**
 * A user's module of `edge`: calls every generated function. Lines 11-15
 * use deprecated members.
 */
const usage = `import type { Transport } from "@connectrpc/connect";
import type { MqttServer } from "@mqrpc/runtime";
import * as imports from "./acme/imports/v1/imports_mqrpc.js";
import * as names from "./acme/names/v1/names_mqrpc.js";
import * as gen from "./acme/v1/widget_mqrpc.js";

declare const t: Transport;
declare const s: MqttServer;
const widget = gen.createWidgetServiceClient(t, { settings: { get: { batchLingerMs: 1 } } });
gen.registerWidgetService(s, { get: () => ({}) });
void widget.getOld({});
void gen.WidgetServiceMqtt.getOld;
gen.createGadgetClient(t);
gen.registerGadget(s, {});
void gen.GadgetMqtt;
// TypeScript checks members that Object.prototype provides (hasOwnProperty,
// isPrototypeOf) even where they are optional, so these objects name them.
const proto = names.createNamesClient(t, {
  settings: { ["__proto__"]: { batchLingerMs: 1 }, hasOwnProperty: {}, isPrototypeOf: {} },
});
void proto.hasOwnProperty({});
names.registerNames(s, {
  ["__proto__"]: async function* () {},
  hasOwnProperty: () => ({}),
  isPrototypeOf: () => ({}),
});
${importedNames
  .map(
    (name) =>
      `void imports.create${name}Client(t).a({});\n` +
      `imports.register${name}(s, { a: () => ({}) });\n` +
      `void imports.${name}Mqtt.a;`,
  )
  .join("\n")}
`;

let edgeChecked: TypeCheck | undefined;

/** `edge` and `usage`, type-checked once for the tests that read the result. */
function edgeCheck(): TypeCheck {
  edgeChecked ??= typeCheck({
    ...generateWithEs(edge, "target=ts,import_extension=js"),
    "use.ts": usage,
  });
  return edgeChecked;
}
