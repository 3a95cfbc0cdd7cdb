/**
 * A server's schema as the CLI uses it: the files (from server reflection
 * or `--schema`), a registry over them, the services the server offers, and
 * lookups of methods and symbols by the names people type.
 */
import {
  create,
  createFileRegistry,
  type DescEnum,
  type DescExtension,
  type DescMessage,
  type DescMethod,
  type DescService,
  type FileRegistry,
} from "@bufbuild/protobuf";
import { type FileDescriptorProto, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { CliError } from "../exit-codes.js";

/** Services that every native server answers and that a listing leaves out unless asked. */
export const REFLECTION_SERVICES: ReadonlySet<string> = new Set([
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
]);

/** A schema and where it came from. */
export interface Schema {
  /** `server reflection` or the `--schema` inputs. */
  readonly source: string;
  /** Every file, imports before the files that import them. */
  readonly files: readonly FileDescriptorProto[];
  readonly registry: FileRegistry;
  /** The services the server offers (reflection's list), or every service in the files. */
  readonly services: readonly DescService[];
}

/**
 * Builds a schema from files in any order; `serviceNames` picks the
 * services (default: every service in the files).
 *
 * @throws CliError naming the file when a file's import is missing or the
 *   files do not resolve.
 */
export function schemaOf(
  source: string,
  files: readonly FileDescriptorProto[],
  serviceNames?: readonly string[],
): Schema {
  const ordered = orderFiles(files);
  let registry: FileRegistry;
  try {
    registry = createFileRegistry(create(FileDescriptorSetSchema, { file: ordered }));
  } catch (e) {
    throw new CliError(`the schema from ${source} does not resolve: ${(e as Error).message}`);
  }
  const services: DescService[] = [];
  if (serviceNames === undefined) {
    for (const type of registry) if (type.kind === "service") services.push(type);
  } else {
    for (const name of serviceNames) {
      const service = registry.getService(name);
      if (service !== undefined) services.push(service);
    }
  }
  services.sort((a, b) => (a.typeName < b.typeName ? -1 : a.typeName > b.typeName ? 1 : 0));
  return { source, files: ordered, registry, services };
}

/** `files` with every import before its importers; the first of two files of one name wins. */
function orderFiles(files: readonly FileDescriptorProto[]): FileDescriptorProto[] {
  const byName = new Map<string, FileDescriptorProto>();
  for (const f of files) if (!byName.has(f.name)) byName.set(f.name, f);
  const ordered: FileDescriptorProto[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (file: FileDescriptorProto) => {
    const seen = state.get(file.name);
    if (seen === "done") return;
    if (seen === "visiting") throw new CliError(`import cycle through ${file.name}`);
    state.set(file.name, "visiting");
    for (const dep of file.dependency) {
      const imported = byName.get(dep);
      if (imported === undefined) {
        throw new CliError(`the schema lacks ${dep}, imported by ${file.name}`);
      }
      visit(imported);
    }
    state.set(file.name, "done");
    ordered.push(file);
  };
  for (const file of byName.values()) visit(file);
  return ordered;
}

/**
 * Finds a method by `pkg.Service/Method`, `pkg.Service.Method`, a leading
 * `/`, or a service name without its package (`Service/Method`) when only
 * one service has it.
 *
 * @throws CliError naming the method and the services known when there is
 *   no such method or the short name is ambiguous.
 */
export function findMethod(schema: Schema, name: string): DescMethod {
  const trimmed = name.replace(/^\//, "");
  const slash = trimmed.lastIndexOf("/");
  const dot = trimmed.lastIndexOf(".");
  const cut = slash >= 0 ? slash : dot;
  if (cut <= 0 || cut === trimmed.length - 1) {
    throw new CliError(`"${name}" is not a method name: write it as package.Service/Method`);
  }
  const serviceName = trimmed.slice(0, cut);
  const methodName = trimmed.slice(cut + 1);
  const candidates = [...schema.services, ...registryServices(schema)].filter(
    (s, i, all) =>
      all.indexOf(s) === i &&
      (s.typeName === serviceName || s.typeName.endsWith(`.${serviceName}`)),
  );
  const exact = candidates.filter((s) => s.typeName === serviceName);
  const services = exact.length > 0 ? exact : candidates;
  if (services.length > 1) {
    throw new CliError(
      `"${serviceName}" is ambiguous: ${services.map((s) => s.typeName).join(", ")}; give the full name`,
    );
  }
  const service = services[0];
  if (service === undefined) {
    const known = schema.services.map((s) => s.typeName).join(", ") || "none";
    throw new CliError(
      `no service ${serviceName} in the schema (from ${schema.source}); services: ${known}`,
    );
  }
  const method = service.methods.find((m) => m.name === methodName);
  if (method === undefined) {
    throw new CliError(
      `${service.typeName} has no method ${methodName}; methods: ${service.methods.map((m) => m.name).join(", ")}`,
    );
  }
  return method;
}

function registryServices(schema: Schema): DescService[] {
  const all: DescService[] = [];
  for (const type of schema.registry) if (type.kind === "service") all.push(type);
  return all;
}

/** What a symbol names. */
export type SchemaSymbol = DescService | DescMethod | DescMessage | DescEnum | DescExtension;

/**
 * Finds a service, method (`pkg.Service.Method` or `pkg.Service/Method`),
 * message, enum or extension by its fully qualified name (a leading `.` is
 * allowed), or a service by its name without package when unique.
 */
export function findSymbol(schema: Schema, name: string): SchemaSymbol | undefined {
  const symbol = name.replace(/^\./, "").replace("/", ".");
  const type = schema.registry.get(symbol);
  if (type !== undefined) return type;
  const dot = symbol.lastIndexOf(".");
  if (dot > 0) {
    const service = schema.registry.getService(symbol.slice(0, dot));
    const method = service?.methods.find((m) => m.name === symbol.slice(dot + 1));
    if (method !== undefined) return method;
  }
  const short = registryServices(schema).filter((s) => s.typeName.endsWith(`.${symbol}`));
  return short.length === 1 ? short[0] : undefined;
}
