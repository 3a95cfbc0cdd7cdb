/**
 * Checks of option objects shared by `createMqttServer` and
 * `createMqttTransport`: errors name the option and show the value as
 * given, so that a typo or a value of the wrong type fails at once, not as
 * a strange error on the first call.
 */

/** A value as an option error shows it: strings quoted (`"10"` is not 10), objects by kind. */
export function shownValue(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "function") return "a function";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object" && value !== null) return "an object";
  return String(value);
}

/**
 * The option names of `T`, from an object that must list each of them
 * (and nothing else), so that the set cannot fall behind the type.
 */
export function optionNames<T>(names: Record<keyof T, true>): ReadonlySet<string> {
  return new Set(Object.keys(names));
}

/**
 * @throws Error naming the first key of `options` that is not in `known`
 *   and listing those that are.
 */
export function refuseUnknownOptions(
  what: string,
  options: object,
  known: ReadonlySet<string>,
): void {
  for (const key of Object.keys(options)) {
    if (!known.has(key)) {
      throw new Error(`${key} is not an option of ${what} (it takes ${[...known].join(", ")})`);
    }
  }
}

/** @throws Error naming `name` unless `value` is undefined or a boolean. */
export function optionalBoolean(name: string, value: unknown): boolean | undefined {
  if (value !== undefined && typeof value !== "boolean") {
    throw new Error(`${name} must be true or false, not ${shownValue(value)}`);
  }
  return value;
}

/** @throws Error naming `name` unless `value` is undefined or an array of functions. */
export function optionalFunctions<T>(name: string, value: unknown): T[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) {
    throw new Error(`${name} must be an array of functions, not ${shownValue(value)}`);
  }
  const bad = value.findIndex((f) => typeof f !== "function");
  if (bad >= 0) {
    throw new Error(
      `${name} must be an array of functions; ${name}[${bad}] is ${shownValue(value[bad])}`,
    );
  }
  return value as T[];
}
