/**
 * Per-method MQTT settings: how a method's messages travel. Resolved with the
 * precedence method > service > file > plugin parameter > runtime default;
 * protoc-gen-mqrpc writes the first four levels into `*_mqrpc.ts`, and the
 * runtime fills in its defaults.
 */
import { type DescMethod, type DescService, getOption, hasOption } from "@bufbuild/protobuf";
import {
  type ContextValues,
  createContextKey,
  createContextValues,
  type Transport,
} from "@connectrpc/connect";
import {
  file_options,
  type MqttOptions,
  method_options,
  service_options,
} from "./gen/mqrpc/v1/options_pb.js";

/** The MQTT settings of one method, fully resolved. */
export interface MethodSettings {
  /**
   * Pack stream messages into Batch frames. Many small messages then cost few
   * publishes; a batch never waits longer than {@link batchLingerMs}.
   */
  readonly batchedStream: boolean;
  /** The longest a batched message waits for company, in milliseconds. */
  readonly batchLingerMs: number;
}

/** The runtime defaults: unbatched, 5 ms linger when batching is switched on. */
export const defaultMethodSettings: MethodSettings = Object.freeze({
  batchedStream: false,
  batchLingerMs: 5,
});

/**
 * Settings for every method of a service, keyed by the method's local name
 * (as in `ServiceImpl`). Unset fields fall back to the runtime default. This
 * is the shape of the constant that protoc-gen-mqrpc generates per service.
 */
export type ServiceSettings<S extends DescService = DescService> = {
  readonly [K in keyof S["method"]]?: Partial<MethodSettings>;
};

/** Carries a method's settings from a bound client to the transport. */
export const methodSettingsKey = createContextKey<Partial<MethodSettings> | undefined>(undefined, {
  description: "mqrpc method settings",
});

/**
 * The settings `settings` holds for the method with local name `name`, read
 * as an own property only: a method named `__proto__`, `toString` or
 * `hasOwnProperty` must not find what every object inherits.
 */
export function ownSettings(
  settings: object | undefined,
  name: string,
): Partial<MethodSettings> | undefined {
  if (settings === undefined || !Object.hasOwn(settings, name)) return undefined;
  return (settings as Record<string, Partial<MethodSettings> | undefined>)[name];
}

/** Fills unset fields of `partial` with the runtime defaults. */
export function completeMethodSettings(
  partial: Partial<MethodSettings> | undefined,
): MethodSettings {
  if (partial === undefined) {
    return defaultMethodSettings;
  }
  return {
    batchedStream: partial.batchedStream ?? defaultMethodSettings.batchedStream,
    batchLingerMs: partial.batchLingerMs ?? defaultMethodSettings.batchLingerMs,
  };
}

/** Whether two complete settings are the same, field by field. */
export function sameMethodSettings(a: MethodSettings, b: MethodSettings): boolean {
  return a.batchedStream === b.batchedStream && a.batchLingerMs === b.batchLingerMs;
}

/** Settings that generated `*_mqrpc.ts` modules registered, per method descriptor. */
const registeredSettings = new WeakMap<DescMethod, MethodSettings>();

/**
 * Makes `settings` the settings of `service`'s methods wherever a client or
 * registration comes without settings of its own: `server.service(Service,
 * impl)`, Connect's `createClient(Service, transport)` and
 * `createMqttClient(Service, transport)` then behave as the generated
 * `register<Service>` and `create<Service>Client` do. Every generated
 * `*_mqrpc.ts` module calls it for each of its services when it loads, so
 * the generated settings (which include the plugin parameters) apply even
 * when the descriptor carries no mqrpc options, e.g. when the `_pb` file was
 * generated with `exclude_types: [mqrpc.v1]`, which strips them. Methods
 * that `settings` leaves out, and fields it leaves unset, take the runtime
 * defaults. A later call for the same descriptor replaces the settings.
 */
export function registerServiceSettings<S extends DescService>(
  service: S,
  settings: ServiceSettings<S>,
): void {
  for (const method of service.methods) {
    registeredSettings.set(method, completeMethodSettings(ownSettings(settings, method.localName)));
  }
}

/**
 * The settings of a method that comes without generated settings, e.g. in
 * plain `createClient(Service, transport)`: those registered for its service
 * by {@link registerServiceSettings} (the generated `*_mqrpc.ts` module, once
 * loaded), otherwise the custom options embedded in its descriptor (method >
 * service > file > runtime default; no plugin parameter level).
 */
export function settingsFromDescriptor(method: DescMethod): MethodSettings {
  const registered = registeredSettings.get(method);
  if (registered !== undefined) return registered;
  let settings = descriptorSettings.get(method);
  if (settings === undefined) {
    settings = readDescriptorSettings(method);
    descriptorSettings.set(method, settings);
  }
  return settings;
}

/** Options never change once a descriptor exists: read them once per method. */
const descriptorSettings = new WeakMap<DescMethod, MethodSettings>();

function readDescriptorSettings(method: DescMethod): MethodSettings {
  const levels: MqttOptions[] = [];
  if (hasOption(method, method_options)) levels.push(getOption(method, method_options));
  if (hasOption(method.parent, service_options))
    levels.push(getOption(method.parent, service_options));
  if (hasOption(method.parent.file, file_options))
    levels.push(getOption(method.parent.file, file_options));
  const pick = <K extends "batchedStream" | "batchLingerMs">(key: K): MqttOptions[K] | undefined =>
    levels.find((o) => o[key] !== undefined)?.[key];
  return completeMethodSettings({
    ...(pick("batchedStream") !== undefined
      ? { batchedStream: pick("batchedStream") as boolean }
      : {}),
    ...(pick("batchLingerMs") !== undefined
      ? { batchLingerMs: pick("batchLingerMs") as number }
      : {}),
  });
}

/**
 * Resolves the settings of a call: generated settings carried in the context
 * values win; otherwise the descriptor's options apply.
 */
export function settingsForCall(
  method: DescMethod,
  values: ContextValues | undefined,
): MethodSettings {
  const bound = values?.get(methodSettingsKey);
  return bound !== undefined ? completeMethodSettings(bound) : settingsFromDescriptor(method);
}

/**
 * Merges per-method overrides over generated settings, field by field.
 * Generated `create<Service>Client(transport, { settings })` uses it.
 */
export function mergeServiceSettings<S extends DescService>(
  base: ServiceSettings<S>,
  override: ServiceSettings<S> | undefined,
): ServiceSettings<S> {
  if (override === undefined) return base;
  // Own keys only, defined as data: a method named `__proto__` must not set
  // the prototype, nor one named `toString` read Object.prototype's.
  const merged: Record<string, Partial<MethodSettings>> = Object.create(null);
  for (const [name, settings] of Object.entries(
    base as Record<string, Partial<MethodSettings> | undefined>,
  )) {
    if (settings !== undefined)
      Object.defineProperty(merged, name, { value: settings, enumerable: true, writable: true });
  }
  for (const [name, settings] of Object.entries(
    override as Record<string, Partial<MethodSettings> | undefined>,
  )) {
    if (settings === undefined) continue;
    const value = { ...ownSettings(merged, name), ...settings };
    Object.defineProperty(merged, name, { value, enumerable: true, writable: true });
  }
  return merged as ServiceSettings<S>;
}

/**
 * Wraps a transport so that every call of `service` carries the settings
 * generated for it. Generated `create<Service>Client` functions use this; it
 * works with any transport and leaves interceptors untouched.
 */
export function bindServiceSettings<S extends DescService>(
  transport: Transport,
  service: S,
  settings: ServiceSettings<S>,
): Transport {
  const lookup = new Map<string, Partial<MethodSettings>>();
  for (const method of service.methods) {
    const s = ownSettings(settings, method.localName);
    if (s !== undefined) lookup.set(method.name, s);
  }
  const withSettings = (method: DescMethod, values: ContextValues | undefined): ContextValues => {
    const out = values ?? createContextValues();
    if (method.parent.typeName === service.typeName && out.get(methodSettingsKey) === undefined) {
      const s = lookup.get(method.name);
      if (s !== undefined) out.set(methodSettingsKey, s);
    }
    return out;
  };
  return {
    unary: (method, signal, timeoutMs, header, input, values) =>
      transport.unary(method, signal, timeoutMs, header, input, withSettings(method, values)),
    stream: (method, signal, timeoutMs, header, input, values) =>
      transport.stream(method, signal, timeoutMs, header, input, withSettings(method, values)),
  };
}
