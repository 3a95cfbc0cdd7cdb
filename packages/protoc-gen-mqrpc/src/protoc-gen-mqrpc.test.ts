/**
 * In-process plugin tests: inline proto is compiled with the local buf, the
 * CodeGeneratorRequest is handed to the plugin object, and the generated
 * lines are checked exactly.
 */
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { create, fromBinary } from "@bufbuild/protobuf";
import { CodeGeneratorRequestSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { afterAll, describe, expect, it } from "vitest";
import { protocGenMqrpc } from "./protoc-gen-mqrpc.js";

const repo = join(dirname(fileURLToPath(import.meta.url)), "../../..");
const buf = join(repo, "node_modules/.bin/buf");
const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** Compiles `files` (path -> proto source) with buf; options.proto is available. */
function compile(files: Record<string, string>) {
  const dir = mkdtempSync(join(tmpdir(), "mqrpc-plugin-"));
  dirs.push(dir);
  writeFileSync(join(dir, "buf.yaml"), "version: v2\n");
  mkdirSync(join(dir, "mqrpc/v1"), { recursive: true });
  copyFileSync(join(repo, "proto/mqrpc/v1/options.proto"), join(dir, "mqrpc/v1/options.proto"));
  for (const [path, source] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), source);
  }
  const image = execFileSync(buf, ["build", dir, "-o", "-#format=binpb"], { maxBuffer: 64 << 20 });
  return fromBinary(FileDescriptorSetSchema, image);
}

/** Runs the plugin on `files`, generating for `generate` with `parameter`. */
function run(
  files: Record<string, string>,
  parameter = "target=ts",
  generate = Object.keys(files),
) {
  const set = compile(files);
  const request = create(CodeGeneratorRequestSchema, {
    protoFile: set.file,
    fileToGenerate: generate,
    parameter,
  });
  try {
    const response = protocGenMqrpc.run(request);
    return {
      error: response.error ?? "",
      files: Object.fromEntries(response.file.map((f) => [f.name, f.content])),
    };
  } catch (e) {
    // runNodeJs reports a thrown error to protoc/buf as the plugin's failure.
    return { error: e instanceof Error ? e.message : String(e), files: {} };
  }
}

function settingsLines(content: string | undefined, service: string): string[] {
  const lines = (content ?? "").split("\n");
  const start = lines.findIndex((l) => l.startsWith(`export const ${service}MqttSettings`));
  expect(start).toBeGreaterThanOrEqual(0);
  const end = lines.indexOf("};", start);
  return lines.slice(start + 1, end).map((l) => l.trim());
}

const header = `syntax = "proto3";\npackage acme.v1;\nimport "mqrpc/v1/options.proto";\nmessage M { string s = 1; }\n`;

describe("protoc-gen-mqrpc", () => {
  it("emits settings, client factory and registration per service, importing the es output", () => {
    const { error, files } = run({
      "acme/v1/svc.proto": `${header}
// Talks to a widget.
service WidgetService {
  rpc Get(M) returns (M);
  rpc Watch(M) returns (stream M);
  rpc Upload(stream M) returns (M);
  rpc Chat(stream M) returns (stream M);
}`,
    });
    expect(error).toBe("");
    const out = files["acme/v1/svc_mqrpc.ts"] ?? "";
    expect(Object.keys(files)).toEqual(["acme/v1/svc_mqrpc.ts"]);
    expect(settingsLines(out, "WidgetService")).toEqual([
      "get: {},",
      "watch: {},",
      "upload: {},",
      "chat: {},",
    ]);
    expect(out).toContain('import { WidgetService } from "./svc_pb";');
    expect(out).toContain(
      'import { bindServiceSettings, mergeServiceSettings } from "@mqrpc/runtime";',
    );
    expect(out).toContain('import type { MqttServer, ServiceSettings } from "@mqrpc/runtime";');
    expect(out).toContain("export function createWidgetServiceClient(");
    expect(out).toContain("): Client<typeof WidgetService> {");
    expect(out).toContain("export function registerWidgetService(");
    expect(out).toContain(
      "  return server.service(WidgetService, impl, WidgetServiceMqttSettings);",
    );
    expect(out).toContain(" * Talks to a widget.");
  });

  it("resolves precedence: method > service > file > plugin parameter", () => {
    const { error, files } = run(
      {
        "acme/v1/p.proto": `${header}
option (mqrpc.v1.file_options).batch_linger_ms = 9;
service FileOnly { rpc A(M) returns (stream M); }
service ServiceSet {
  option (mqrpc.v1.service_options).batched_stream = false;
  rpc A(M) returns (stream M);
  rpc B(M) returns (stream M) { option (mqrpc.v1.method_options).batched_stream = true; option (mqrpc.v1.method_options).batch_linger_ms = 1; }
}`,
      },
      "target=ts,batched_stream=true,batch_linger_ms=3",
    );
    expect(error).toBe("");
    const out = files["acme/v1/p_mqrpc.ts"];
    // Plugin parameter for batching, file option beats the parameter's linger.
    expect(settingsLines(out, "FileOnly")).toEqual([
      "a: { batchedStream: true, batchLingerMs: 9 },",
    ]);
    // Service beats the parameter; method beats service and file.
    expect(settingsLines(out, "ServiceSet")).toEqual([
      "a: { batchedStream: false, batchLingerMs: 9 },",
      "b: { batchedStream: true, batchLingerMs: 1 },",
    ]);
  });

  it("uses the plugin parameter when no option is set, and nothing when neither is", () => {
    const files = { "acme/v1/q.proto": `${header}service S { rpc A(M) returns (stream M); }` };
    expect(
      settingsLines(run(files, "target=ts,batched_stream=false").files["acme/v1/q_mqrpc.ts"], "S"),
    ).toEqual(["a: { batchedStream: false },"]);
    expect(settingsLines(run(files, "target=ts").files["acme/v1/q_mqrpc.ts"], "S")).toEqual([
      "a: {},",
    ]);
  });

  it("generates nothing for a file without services", () => {
    const { error, files } = run({ "acme/v1/m.proto": header });
    expect(error).toBe("");
    expect(files).toEqual({});
  });

  it("rejects an unknown parameter, naming it and the accepted ones", () => {
    const { error } = run({ "acme/v1/u.proto": header }, "target=ts,batching=yes");
    expect(error).toMatch(/unknown plugin parameter "batching"/);
    expect(error).toMatch(/batched_stream, batch_linger_ms/);
  });

  it("rejects invalid parameter values, naming the parameter", () => {
    expect(run({ "acme/v1/v.proto": header }, "target=ts,batched_stream=maybe").error).toMatch(
      /batched_stream/,
    );
    expect(run({ "acme/v1/w.proto": header }, "target=ts,batch_linger_ms=-1").error).toMatch(
      /batch_linger_ms/,
    );
  });
});
