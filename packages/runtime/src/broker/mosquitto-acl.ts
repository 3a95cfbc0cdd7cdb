/**
 * Mosquitto `acl_file` rules, parsed and evaluated as Mosquitto 2 does, for
 * the embedded broker: the file shipped in docs/mosquitto-acl.conf works
 * unchanged on both brokers. Pure: no I/O, no broker.
 *
 * Syntax (one rule a line; a line whose first character is `#` is a comment,
 * blank lines are ignored, words are separated by spaces):
 *
 * - `user <name>`: the `topic` lines after it apply to that MQTT username;
 *   `topic` lines before the first `user` line apply to clients that connect
 *   without a username.
 * - `topic [read|write|readwrite|deny] <filter>`: access for the current
 *   user; without an access word, `readwrite`.
 * - `pattern [read|write|readwrite|deny] <filter>`: access for every client,
 *   with `%c` standing for its client id and `%u` for its username. Each must
 *   be a whole topic level (`mqrpc/c/%c/+`, not `mqrpc/c/x%c`); a rule with
 *   `%u` does not apply to a client without a username.
 *
 * Evaluation (first decision wins, otherwise denied): the user's `deny`
 * lines, the user's other lines, then the `deny` patterns, then the other
 * patterns. A matching rule without the access asked for is passed over.
 * When the ACL has patterns and the client id or username contains `+`,
 * `#` or `/`, no pattern applies to that client (Mosquitto 2 refuses `+` and
 * `#`; `/` is refused too, since it would let `%c` span several levels).
 */

/** The access a rule grants, or `deny`. */
export type AclAccess = "read" | "write" | "readwrite" | "deny";

/** One parsed rule of an ACL. */
export interface AclRule {
  /** `topic` (for {@link user}) or `pattern` (for every client, with substitutions). */
  readonly kind: "topic" | "pattern";
  /**
   * What the rule grants: `read` (subscribe and receive), `write`
   * (publish, retained messages and last wills), `readwrite` (both; also a
   * line without an access word), or `deny` (refuses both, checked before
   * the grants of its kind).
   */
  readonly access: AclAccess;
  /** The topic filter as written, `%c`/`%u` unsubstituted. */
  readonly filter: string;
  /** For `topic` rules: the username of the `user` block; undefined before the first one. */
  readonly user: string | undefined;
  /** 1-based line number in the text. */
  readonly line: number;
}

/** Who a connection is, for the ACL. */
export interface AclIdentity {
  /** The MQTT client id, substituted for `%c` in patterns. */
  readonly clientId: string;
  /** Undefined when the client connected without a username. */
  readonly username: string | undefined;
}

/** A syntax error in an ACL text, naming its line. */
export class AclSyntaxError extends Error {
  /** Always `"AclSyntaxError"`. */
  override readonly name = "AclSyntaxError";
  constructor(
    /** 1-based line number. */
    readonly line: number,
    /** What is wrong with the line; `message` is `line {line}: {detail}`. */
    readonly detail: string,
  ) {
    super(`line ${line}: ${detail}`);
  }
}

const ACCESS_WORDS: ReadonlySet<string> = new Set(["read", "write", "readwrite", "deny"]);
const READ = 1;
const WRITE = 2;

function accessBits(access: AclAccess): number {
  switch (access) {
    case "read":
      return READ;
    case "write":
      return WRITE;
    case "readwrite":
      return READ | WRITE;
    case "deny":
      return 0;
  }
}

/**
 * Why `filter` is not a valid MQTT topic filter (`+` and `#` only as whole
 * levels, `#` only last, not empty, no NUL), or undefined when it is.
 */
export function topicFilterProblem(filter: string): string | undefined {
  if (filter.length === 0) return "the topic filter is empty";
  if (filter.includes("\u0000")) return "the topic filter contains a NUL character";
  const levels = filter.split("/");
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i] as string;
    if (level.length > 1 && (level.includes("+") || level.includes("#"))) {
      return `"+" and "#" must be whole topic levels, but "${level}" is not`;
    }
    if (level === "#" && i !== levels.length - 1) return '"#" must be the last topic level';
  }
  return undefined;
}

/**
 * Parses Mosquitto `acl_file` text. Throws {@link AclSyntaxError} naming the
 * first malformed line: an unknown keyword, a `user` line without a name, a
 * `topic`/`pattern` line without a filter or with an unknown access word, an
 * invalid filter, `%c`/`%u` that are not whole levels in a pattern, or a
 * comment that does not start the line (Mosquitto refuses all of these too,
 * except that it reads `topic read` as the topic "read" with readwrite
 * access, which is refused here as the slip it almost surely is).
 */
export function parseMosquittoAcl(text: string): MosquittoAcl {
  const rules: AclRule[] = [];
  let user: string | undefined;
  const lines = text.split("\n");
  for (let index = 0; index < lines.length; index++) {
    const lineNumber = index + 1;
    // Mosquitto strips trailing white space (including "\r") and splits on spaces only.
    const line = (lines[index] as string).replace(/\s+$/, "");
    if (line.length === 0 || line.startsWith("#")) continue;
    const words = line.split(" ").filter((w) => w.length > 0);
    const keyword = words[0];
    if (keyword === undefined) continue;
    if (keyword === "user") {
      const name = line.slice(line.indexOf("user") + 4).trim();
      if (name.length === 0) throw new AclSyntaxError(lineNumber, "`user` without a username");
      user = name;
      continue;
    }
    if (keyword !== "topic" && keyword !== "pattern") {
      throw new AclSyntaxError(
        lineNumber,
        keyword.startsWith("#")
          ? "a comment must start at the beginning of the line"
          : `unknown keyword ${JSON.stringify(keyword)} (expected user, topic or pattern)`,
      );
    }
    const second = words[1];
    if (second === undefined)
      throw new AclSyntaxError(lineNumber, `\`${keyword}\` without a topic`);
    let access: AclAccess;
    let filter: string;
    if (words.length === 2) {
      if (ACCESS_WORDS.has(second)) {
        throw new AclSyntaxError(
          lineNumber,
          `\`${keyword} ${second}\` without a topic (Mosquitto would read "${second}" as the topic)`,
        );
      }
      access = "readwrite";
      filter = second;
    } else {
      if (!ACCESS_WORDS.has(second)) {
        throw new AclSyntaxError(
          lineNumber,
          `unknown access ${JSON.stringify(second)} (expected read, write, readwrite or deny)`,
        );
      }
      access = second as AclAccess;
      // The rest of the line after the access word, as Mosquitto takes it.
      const afterKeyword = line.slice(line.indexOf(keyword) + keyword.length);
      filter = afterKeyword.slice(afterKeyword.indexOf(second) + second.length).trim();
    }
    const problem = topicFilterProblem(filter);
    if (problem !== undefined) throw new AclSyntaxError(lineNumber, problem);
    if (keyword === "pattern") {
      for (const level of filter.split("/")) {
        if ((level.includes("%c") || level.includes("%u")) && level !== "%c" && level !== "%u") {
          throw new AclSyntaxError(
            lineNumber,
            `%c and %u must be whole topic levels, but "${level}" is not`,
          );
        }
      }
    }
    rules.push({
      kind: keyword,
      access,
      filter,
      user: keyword === "topic" ? user : undefined,
      line: lineNumber,
    });
  }
  return new MosquittoAcl(rules);
}

/** A compiled rule: filter levels, with `%c`/`%u` markers in patterns. */
interface CompiledRule {
  readonly allow: number;
  readonly deny: boolean;
  readonly levels: readonly string[];
  readonly usesUsername: boolean;
}

const CLIENT_ID = "\u0000%c";
const USERNAME = "\u0000%u";

function compile(rule: AclRule): CompiledRule {
  const levels = rule.filter.split("/").map((level) => {
    if (rule.kind !== "pattern") return level;
    if (level === "%c") return CLIENT_ID;
    if (level === "%u") return USERNAME;
    return level;
  });
  return {
    allow: accessBits(rule.access),
    deny: rule.access === "deny",
    levels,
    usesUsername: levels.includes(USERNAME),
  };
}

/** Deny rules first, the others after, each in file order (Mosquitto's evaluation order). */
function denyFirst(rules: readonly CompiledRule[]): CompiledRule[] {
  return [...rules.filter((r) => r.deny), ...rules.filter((r) => !r.deny)];
}

/** A parsed ACL; {@link forClient} gives the rules of one connection. */
export class MosquittoAcl {
  /** The compiled `topic` rules per username (undefined: before the first `user` line), deny rules first. */
  private readonly byUser = new Map<string | undefined, CompiledRule[]>();
  /** The compiled `pattern` rules, deny rules first. */
  private readonly patterns: readonly CompiledRule[];

  /**
   * Compiles parsed rules; {@link parseMosquittoAcl} is the usual way to
   * get one. Does not check the rules again.
   */
  constructor(
    /** The rules as parsed, in file order. */
    readonly rules: readonly AclRule[],
  ) {
    const patterns: CompiledRule[] = [];
    for (const rule of rules) {
      if (rule.kind === "pattern") {
        patterns.push(compile(rule));
        continue;
      }
      let list = this.byUser.get(rule.user);
      if (list === undefined) {
        list = [];
        this.byUser.set(rule.user, list);
      }
      list.push(compile(rule));
    }
    for (const [user, list] of this.byUser) this.byUser.set(user, denyFirst(list));
    this.patterns = denyFirst(patterns);
  }

  /**
   * The rules that apply to one connection, substituted: its user's `topic`
   * lines (or the anonymous ones), then the patterns, as checks for publish,
   * receive and subscribe.
   */
  forClient(identity: AclIdentity): ClientAcl {
    const { clientId, username } = identity;
    const ordered: ResolvedRule[] = (this.byUser.get(username) ?? []).map((r) => ({
      allow: r.allow,
      deny: r.deny,
      levels: r.levels,
    }));
    const dangerous = (name: string) => /[+#/]/.test(name);
    const patternsApply = !dangerous(clientId) && (username === undefined || !dangerous(username));
    if (patternsApply) {
      for (const rule of this.patterns) {
        if (rule.usesUsername && username === undefined) continue;
        ordered.push({
          allow: rule.allow,
          deny: rule.deny,
          levels: rule.levels.map((level) =>
            level === CLIENT_ID ? clientId : level === USERNAME ? (username as string) : level,
          ),
        });
      }
    }
    return new ClientAcl(ordered);
  }
}

interface ResolvedRule {
  readonly allow: number;
  readonly deny: boolean;
  readonly levels: readonly string[];
}

/** The ACL of one connection: what it may publish, receive and subscribe to. */
export class ClientAcl {
  /** Made by {@link MosquittoAcl.forClient}. */
  constructor(
    /** The rules that apply to this connection, substituted, in evaluation order. */
    private readonly rules: readonly ResolvedRule[],
  ) {}

  /** Whether the client may publish on `topic` (a topic name, no wildcards): `write`. */
  canPublish(topic: string): boolean {
    return this.check(topic, WRITE);
  }

  /** Whether a message on `topic` may be delivered to the client: `read`. */
  canReceive(topic: string): boolean {
    return this.check(topic, READ);
  }

  /**
   * Whether the client may subscribe to `filter`: some `read` rule covers
   * every topic the filter matches, and no `deny` rule before it covers the
   * filter. A deny that covers only part of the filter does not refuse the
   * subscription; {@link canReceive} then holds back the denied messages.
   * (Mosquitto 2 grants every subscription and checks only each message;
   * refusing here makes the refusal visible in the SUBACK.)
   */
  canSubscribe(filter: string): boolean {
    const levels = filter.split("/");
    for (const rule of this.rules) {
      if (rule.deny) {
        if (filterCoversLevels(rule.levels, levels)) return false;
      } else if (rule.allow & READ && filterCoversLevels(rule.levels, levels)) {
        return true;
      }
    }
    return false;
  }

  /**
   * Whether the first rule matching the topic name `topic` grants `access`
   * (a bit set of read 1, write 2): a matching `deny` or no match refuses.
   */
  private check(topic: string, access: number): boolean {
    const levels = topic.split("/");
    for (const rule of this.rules) {
      if (!filterMatchesLevels(rule.levels, levels)) continue;
      if (rule.deny) return false;
      if (rule.allow & access) return true;
    }
    return false;
  }
}

/**
 * MQTT topic matching: whether the topic name `topic` matches the filter
 * `filter` (`+` one level, `#` the rest including the parent level; a
 * filter starting with a wildcard does not match topics starting with `$`).
 */
export function topicMatchesFilter(filter: string, topic: string): boolean {
  return filterMatchesLevels(filter.split("/"), topic.split("/"));
}

function filterMatchesLevels(filter: readonly string[], topic: readonly string[]): boolean {
  const first = filter[0];
  if ((first === "+" || first === "#") && topic[0]?.startsWith("$")) return false;
  for (let i = 0; i < filter.length; i++) {
    const level = filter[i];
    if (level === "#") return true;
    if (i >= topic.length) return false;
    if (level !== "+" && level !== topic[i]) return false;
  }
  return filter.length === topic.length;
}

/**
 * Whether every topic that `inner` matches is also matched by `outer`
 * (both topic filters): the test for a subscription against a rule.
 */
export function filterCovers(outer: string, inner: string): boolean {
  return filterCoversLevels(outer.split("/"), inner.split("/"));
}

function filterCoversLevels(outer: readonly string[], inner: readonly string[]): boolean {
  const first = outer[0];
  if ((first === "+" || first === "#") && inner[0]?.startsWith("$")) return false;
  for (let i = 0; i < outer.length; i++) {
    const level = outer[i];
    if (level === "#") return true;
    if (i >= inner.length) return false;
    const other = inner[i];
    // Inner "#" also matches the parent level, except as the first level,
    // where "+/#" matches exactly what "#" does.
    if (other === "#") return i === 0 && level === "+" && outer.length === 2 && outer[1] === "#";
    if (level === "+") continue;
    if (other === "+" || other !== level) return false;
  }
  return outer.length === inner.length;
}
