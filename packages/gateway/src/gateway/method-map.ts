/**
 * The combined method map of a gateway (grpc-mqtt's monoid of MethodMaps):
 * which upstream serves each fully qualified service, the schema of each
 * upstream where known (for method kinds, MQTT settings and reflection),
 * and the union of the upstreams' files that the gateway's reflection
 * answers from.
 */
import {
  create,
  createFileRegistry,
  type DescService,
  type FileRegistry,
} from "@bufbuild/protobuf";
import { type FileDescriptorProto, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import {
  type MethodSettings,
  type RawMethod,
  type RawMethodResolver,
  settingsFromDescriptor,
} from "@mqrpc/runtime";
import type { Upstream } from "./upstream.js";

/** How an upstream's services became known. */
export type SchemaSource = "services" | "descriptorSet" | "reflection";

/** What the gateway knows of one upstream. */
export interface UpstreamSchema {
  readonly source: SchemaSource;
  /** Fully qualified names of the services the upstream serves. */
  readonly services: readonly string[];
  /** Files defining them (empty when only `services` were given). */
  readonly files: readonly FileDescriptorProto[];
}

interface UpstreamEntry {
  readonly upstream: Upstream;
  readonly settings: Partial<MethodSettings> | undefined;
  schema: UpstreamSchema;
  registry: FileRegistry | undefined;
}

interface Route {
  readonly entry: UpstreamEntry;
  readonly service: DescService | undefined;
  /** Raw methods of the schema's methods made so far, by method name. */
  readonly methods: Map<string, RawMethod>;
}

/**
 * Builds a FileRegistry from files that include everything they import.
 *
 * @throws Error when a file imports one that is not among them.
 */
export function registryOf(files: readonly FileDescriptorProto[]): FileRegistry {
  return createFileRegistry(create(FileDescriptorSetSchema, { file: [...files] }));
}

/** Services, routes and schema of every upstream of one gateway. */
export class MethodMap {
  private readonly entries: UpstreamEntry[] = [];
  private readonly routes = new Map<string, Route>();
  private union: FileRegistry | undefined;

  /**
   * Adds an upstream with its schema.
   *
   * @throws Error naming both upstreams when one of its services is served
   *   by an upstream added before, or when its files do not resolve.
   */
  add(
    upstream: Upstream,
    schema: UpstreamSchema,
    settings: Partial<MethodSettings> | undefined,
  ): void {
    for (const service of schema.services) {
      const owner = this.routes.get(service);
      if (owner !== undefined) {
        throw new Error(
          `service "${service}" is offered by two upstreams, ${owner.entry.upstream.url} and ${upstream.url}: a service is routed to one upstream; list the services each should serve in "services"`,
        );
      }
    }
    const entry: UpstreamEntry = { upstream, settings, schema, registry: undefined };
    entry.registry = this.registryFor(entry);
    this.entries.push(entry);
    this.route(entry);
  }

  /**
   * Replaces what an upstream serves after it was learned again. A service
   * another upstream serves stays with that one; the names of such
   * services are returned.
   *
   * @throws Error when the new files do not resolve (the old schema stays).
   */
  replace(upstream: Upstream, schema: UpstreamSchema): string[] {
    const entry = this.entries.find((e) => e.upstream === upstream);
    if (entry === undefined) throw new Error(`upstream ${upstream.url} is not in the method map`);
    const registry = this.registryFor({ ...entry, schema });
    for (const [name, route] of this.routes) {
      if (route.entry === entry) this.routes.delete(name);
    }
    entry.schema = schema;
    entry.registry = registry;
    this.union = undefined;
    return this.route(entry);
  }

  private registryFor(entry: UpstreamEntry): FileRegistry | undefined {
    if (entry.schema.files.length === 0) return undefined;
    try {
      return registryOf(entry.schema.files);
    } catch (e) {
      throw new Error(
        `upstream ${entry.upstream.url}: its schema (${entry.schema.source}) does not resolve: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
  }

  private route(entry: UpstreamEntry): string[] {
    const taken: string[] = [];
    for (const name of entry.schema.services) {
      if (this.routes.has(name)) {
        taken.push(name);
        continue;
      }
      this.routes.set(name, {
        entry,
        service: entry.registry?.getService(name),
        methods: new Map(),
      });
    }
    this.union = undefined;
    return taken;
  }

  /** The upstream serving a service, if any. */
  upstreamOf(service: string): Upstream | undefined {
    return this.routes.get(service)?.entry.upstream;
  }

  /** Every routed service, sorted, with its upstream's URL. */
  services(): { service: string; upstream: string }[] {
    return [...this.routes.entries()]
      .map(([service, route]) => ({ service, upstream: route.entry.upstream.url }))
      .sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : 0));
  }

  /** What is known of an upstream. */
  schemaOf(upstream: Upstream): UpstreamSchema | undefined {
    return this.entries.find((e) => e.upstream === upstream)?.schema;
  }

  /** The union of the upstreams' files (first upstream wins a file name two share). */
  registry(): FileRegistry {
    if (this.union === undefined) {
      const seen = new Set<string>();
      const files: FileDescriptorProto[] = [];
      for (const entry of this.entries) {
        if (entry.registry === undefined) continue;
        for (const file of entry.schema.files) {
          if (seen.has(file.name)) continue;
          seen.add(file.name);
          files.push(file);
        }
      }
      try {
        this.union = registryOf(files);
      } catch {
        // Two upstreams' files that disagree on a shared import: fall back to
        // merging their registries (each resolved on its own).
        this.union = createFileRegistry(
          ...this.entries.flatMap((e) => (e.registry === undefined ? [] : [e.registry])),
        );
      }
    }
    return this.union;
  }

  /** The resolver for `MqttServer.unknownService`. */
  readonly resolve: RawMethodResolver = (service, method) => {
    const route = this.routes.get(service);
    // Undefined: the server answers UNIMPLEMENTED naming the service and its server id.
    if (route === undefined) return undefined;
    let raw = route.methods.get(method);
    if (raw === undefined) {
      raw = this.rawMethod(route, method);
      // Only the schema's methods are kept: callers choose method names.
      if (raw.kind !== undefined) route.methods.set(method, raw);
    }
    return raw;
  };

  private rawMethod(route: Route, method: string): RawMethod {
    const upstream = route.entry.upstream;
    const desc = route.service?.methods.find((m) => m.name === method);
    // The upstream's `settings` over the schema's mqrpc options over the defaults.
    const settings =
      desc === undefined
        ? route.entry.settings
        : { ...settingsFromDescriptor(desc), ...route.entry.settings };
    return {
      handler: (requests, context) => upstream.forward(requests, context),
      ...(desc !== undefined ? { kind: desc.methodKind } : {}),
      ...(settings !== undefined ? { settings } : {}),
    };
  }
}
