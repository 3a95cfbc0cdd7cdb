import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type AclIdentity,
  type AclRule,
  AclSyntaxError,
  filterCovers,
  parseMosquittoAcl,
  topicFilterProblem,
  topicMatchesFilter,
} from "./mosquitto-acl.js";

const shipped = readFileSync(
  new URL("../../../../docs/mosquitto-acl.conf", import.meta.url),
  "utf8",
);
const as = (username: string | undefined, clientId = username ?? "anon"): AclIdentity => ({
  clientId,
  username,
});

describe("parseMosquittoAcl", () => {
  it("reads the shipped docs/mosquitto-acl.conf", () => {
    const acl = parseMosquittoAcl(shipped);
    expect(acl.rules.length).toBeGreaterThan(0);
    expect(acl.rules.some((r) => r.kind === "pattern" && r.filter.includes("%c"))).toBe(true);
    expect(acl.rules.some((r) => r.kind === "topic" && r.user === "dev-42")).toBe(true);
  });

  it("reads lines as Mosquitto does: comments, blank lines, CRLF, repeated spaces, default access", () => {
    const acl = parseMosquittoAcl(
      [
        "# comment",
        "",
        "   ",
        "topic a/b",
        "user  alice smith ",
        "topic   read   with space/x\r",
        "pattern deny secret/%u",
        "topic write $SYS/x",
      ].join("\n"),
    );
    expect(acl.rules).toEqual<AclRule[]>([
      { kind: "topic", access: "readwrite", filter: "a/b", user: undefined, line: 4 },
      { kind: "topic", access: "read", filter: "with space/x", user: "alice smith", line: 6 },
      { kind: "pattern", access: "deny", filter: "secret/%u", user: undefined, line: 7 },
      { kind: "topic", access: "write", filter: "$SYS/x", user: "alice smith", line: 8 },
    ]);
  });

  it.each([
    ["bogus a/b", 1, /unknown keyword "bogus"/],
    ["user", 1, /`user` without a username/],
    ["topic", 1, /`topic` without a topic/],
    ["pattern read", 1, /`pattern read` without a topic/],
    ["topic readonly a/b", 1, /unknown access "readonly"/],
    ["topic read a/b#", 1, /whole topic levels/],
    ["topic read a/#/b", 1, /"#" must be the last/],
    ["topic read a/+x", 1, /whole topic levels/],
    ["\n\npattern read a/x%c", 3, /%c and %u must be whole topic levels/],
    ["pattern read a/%u-phone", 1, /%c and %u must be whole topic levels/],
    ["topic a/b\n  # indented comment", 2, /comment must start at the beginning/],
  ])("refuses %j, naming line %i", (text, line, message) => {
    let error: unknown;
    try {
      parseMosquittoAcl(text);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(AclSyntaxError);
    expect((error as AclSyntaxError).line).toBe(line);
    expect((error as Error).message).toMatch(new RegExp(`^line ${line}: `));
    expect((error as Error).message).toMatch(message);
  });

  it("never throws anything but AclSyntaxError, whatever the text", () => {
    const word = fc.constantFrom(
      "user",
      "topic",
      "pattern",
      "read",
      "write",
      "readwrite",
      "deny",
      "a/+",
      "#",
      "%c",
      "a/%u/#",
      "x#",
      "",
      "\t",
      "\r",
    );
    const line = fc.array(word, { maxLength: 5 }).map((w) => w.join(" "));
    fc.assert(
      fc.property(fc.array(fc.oneof(line, fc.string()), { maxLength: 8 }), (lines) => {
        try {
          parseMosquittoAcl(lines.join("\n"));
        } catch (e) {
          expect(e).toBeInstanceOf(AclSyntaxError);
        }
      }),
    );
  });
});

describe("the shipped ACL", () => {
  const acl = parseMosquittoAcl(`${shipped}\nuser dev-43\ntopic read mqrpc/s/dev-43/#\n`);
  const alice = acl.forClient(as("alice"));
  const server = acl.forClient(as("dev-42"));

  it("lets a caller read only its own replies and publish only under its own key", () => {
    expect(alice.canReceive("mqrpc/c/alice/dev-42")).toBe(true);
    expect(alice.canReceive("mqrpc/c/bob/dev-42")).toBe(false);
    expect(alice.canSubscribe("mqrpc/c/alice/+")).toBe(true);
    for (const filter of ["mqrpc/c/+/+", "mqrpc/c/#", "#", "mqrpc/c/bob/+", "mqrpc/s/dev-42/#"]) {
      expect(alice.canSubscribe(filter), filter).toBe(false);
    }
    expect(alice.canPublish("mqrpc/s/dev-42/Svc/Method/alice")).toBe(true);
    expect(alice.canPublish("mqrpc/s/dev-42/Svc/Method/alice/replica-1")).toBe(true);
    expect(alice.canPublish("mqrpc/s/dev-42/Svc/Method/bob")).toBe(false);
    expect(alice.canPublish("mqrpc/c/bob/dev-42")).toBe(false);
    expect(alice.canPublish("mqrpc/p/dev-42/dev-42")).toBe(false);
    expect(alice.canReceive("mqrpc/p/dev-42/dev-42")).toBe(true);
  });

  it("lets a server read its requests and write only its own reply topics and presence", () => {
    expect(server.canSubscribe("mqrpc/s/dev-42/#")).toBe(true);
    expect(server.canSubscribe("mqrpc/s/dev-43/#")).toBe(false);
    expect(server.canPublish("mqrpc/c/alice/dev-42")).toBe(true);
    expect(server.canPublish("mqrpc/c/alice/dev-43")).toBe(false);
    expect(server.canPublish("mqrpc/p/dev-42/dev-42")).toBe(true);
    expect(server.canPublish("mqrpc/p/dev-43/dev-43")).toBe(false);
  });

  it("gives an id with a wildcard or a slash no pattern rights", () => {
    for (const id of ["alice/x", "a+b", "a#"]) {
      const client = acl.forClient({ clientId: id, username: "bob" });
      expect(client.canPublish(`mqrpc/s/dev-42/Svc/Method/${id}`), id).toBe(false);
      expect(client.canReceive(`mqrpc/c/${id}/dev-42`), id).toBe(false);
    }
    // The `user` block of an account still applies (Mosquitto checks it first).
    expect(
      acl.forClient({ clientId: "x/y", username: "dev-42" }).canReceive("mqrpc/s/dev-42/a"),
    ).toBe(true);
  });
});

describe("evaluation order", () => {
  it("a user's deny beats the user's grants wherever it is written", () => {
    const acl = parseMosquittoAcl("user u\ntopic read a/#\ntopic deny a/secret");
    const u = acl.forClient(as("u"));
    expect(u.canReceive("a/public")).toBe(true);
    expect(u.canReceive("a/secret")).toBe(false);
    // Partly denied: the subscription is granted, the denied topic is not delivered.
    expect(u.canSubscribe("a/#")).toBe(true);
    expect(u.canSubscribe("a/secret")).toBe(false);
  });

  it("a user's grant beats a deny pattern; a deny pattern beats grant patterns", () => {
    const acl = parseMosquittoAcl(
      "pattern read x/%u/#\npattern deny x/%u/private\nuser u\ntopic read x/u/private",
    );
    expect(acl.forClient(as("u")).canReceive("x/u/private")).toBe(true);
    expect(acl.forClient(as("v")).canReceive("x/v/private")).toBe(false);
    expect(acl.forClient(as("v")).canReceive("x/v/other")).toBe(true);
  });

  it("topic lines before any user line are for clients without a username", () => {
    const acl = parseMosquittoAcl("topic read public/#\nuser u\ntopic read mine/#");
    expect(acl.forClient(as(undefined, "c1")).canReceive("public/a")).toBe(true);
    expect(acl.forClient(as(undefined, "c1")).canReceive("mine/a")).toBe(false);
    expect(acl.forClient(as("u")).canReceive("public/a")).toBe(false);
    expect(acl.forClient(as("u")).canReceive("mine/a")).toBe(true);
  });

  it("a %u pattern does not apply without a username; %c does", () => {
    const acl = parseMosquittoAcl("pattern readwrite u/%u/#\npattern readwrite c/%c/#");
    const anonymous = acl.forClient(as(undefined, "c1"));
    expect(anonymous.canPublish("u/c1/x")).toBe(false);
    expect(anonymous.canPublish("c/c1/x")).toBe(true);
  });

  it("a wildcard rule does not reach $ topics", () => {
    const acl = parseMosquittoAcl("pattern readwrite #\npattern read $SYS/%c/#");
    const c = acl.forClient(as("c"));
    expect(c.canPublish("$SYS/x")).toBe(false);
    expect(c.canReceive("$SYS/c/x")).toBe(true);
    expect(c.canSubscribe("$SYS/#")).toBe(false);
    expect(c.canSubscribe("$SYS/c/#")).toBe(true);
  });

  it("an empty ACL denies everything", () => {
    const c = parseMosquittoAcl("# nothing\n").forClient(as("c"));
    expect(c.canPublish("a")).toBe(false);
    expect(c.canReceive("a")).toBe(false);
    expect(c.canSubscribe("a")).toBe(false);
  });
});

// --- Properties -------------------------------------------------------------

const LEVELS = ["a", "b", "", "$a"];
const filterArb = fc
  .tuple(fc.array(fc.constantFrom(...LEVELS, "+"), { minLength: 0, maxLength: 3 }), fc.boolean())
  .filter(([levels, hash]) => levels.length > 0 || hash)
  .map(([levels, hash]) => [...levels, ...(hash ? ["#"] : [])].join("/"));
const topicArb = fc
  .array(fc.constantFrom(...LEVELS, "z"), { minLength: 1, maxLength: 5 })
  .map((l) => l.join("/"));

/** Every topic of 1 to 5 levels over the filter alphabet plus a fresh level. */
const universe: string[] = (() => {
  const all: string[] = [];
  let layer = [""];
  for (let depth = 1; depth <= 5; depth++) {
    layer = layer.flatMap((prefix) =>
      [...LEVELS, "z"].map((level) => (depth === 1 ? level : `${prefix}/${level}`)),
    );
    all.push(...layer);
  }
  return all;
})();

/** An independent reference: the MQTT matching rules as a regular expression. */
function referenceMatch(filter: string, topic: string): boolean {
  const levels = filter.split("/");
  if ((levels[0] === "+" || levels[0] === "#") && topic.startsWith("$")) return false;
  const literal = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  let source = "";
  levels.forEach((level, i) => {
    const sep = i === 0 ? "" : "/";
    if (level === "#") source = i === 0 ? ".*" : `${source}(?:/.*)?`;
    else source += sep + (level === "+" ? "[^/]*" : literal(level));
  });
  return new RegExp(`^${source}$`, "s").test(topic);
}

describe("topic matching", () => {
  it("agrees with a regular-expression reference", () => {
    fc.assert(
      fc.property(filterArb, topicArb, (filter, topic) => {
        expect(topicMatchesFilter(filter, topic)).toBe(referenceMatch(filter, topic));
      }),
      { numRuns: 2000 },
    );
  });

  it("filterCovers(outer, inner) exactly when every topic inner matches, outer matches", () => {
    fc.assert(
      fc.property(filterArb, filterArb, (outer, inner) => {
        const covered = universe.every(
          (topic) => !topicMatchesFilter(inner, topic) || topicMatchesFilter(outer, topic),
        );
        expect(filterCovers(outer, inner)).toBe(covered);
      }),
      { numRuns: 300 },
    );
  });

  it("knows a valid filter", () => {
    expect(topicFilterProblem("a/+/#")).toBeUndefined();
    expect(topicFilterProblem("")).toMatch(/empty/);
    expect(topicFilterProblem("a/\u0000")).toMatch(/NUL/);
  });
});

/** A direct transcription of Mosquitto 2's acl_check_default, on the parsed rules. */
function referenceCheck(
  rules: readonly AclRule[],
  identity: AclIdentity,
  topic: string,
  access: "read" | "write",
): boolean {
  const denyFirst = (list: AclRule[]) => [
    ...list.filter((r) => r.access === "deny"),
    ...list.filter((r) => r.access !== "deny"),
  ];
  const grants = (r: AclRule) => r.access === "readwrite" || r.access === access;
  const userRules = denyFirst(
    rules.filter((r) => r.kind === "topic" && r.user === identity.username),
  );
  for (const r of userRules) {
    if (topic.startsWith("$") && !r.filter.startsWith("$")) continue;
    if (!referenceMatch(r.filter, topic)) continue;
    if (r.access === "deny") return false;
    if (grants(r)) return true;
  }
  const patterns = denyFirst(rules.filter((r) => r.kind === "pattern"));
  const dangerous = (s: string | undefined) => s !== undefined && /[+#/]/.test(s);
  if (patterns.length > 0 && (dangerous(identity.clientId) || dangerous(identity.username))) {
    return false;
  }
  for (const r of patterns) {
    if (r.filter.includes("%u") && identity.username === undefined) continue;
    const filter = r.filter
      .replaceAll("%c", identity.clientId)
      .replaceAll("%u", identity.username ?? "");
    if (!referenceMatch(filter, topic)) continue;
    if (r.access === "deny") return false;
    if (grants(r)) return true;
  }
  return false;
}

describe("ACL evaluation", () => {
  const names = ["a", "b"];
  const ruleLine = fc
    .tuple(
      fc.constantFrom("topic", "pattern"),
      fc.constantFrom("read", "write", "readwrite", "deny", ""),
      fc.array(fc.constantFrom("a", "b", "$a", "+", "%c", "%u"), { minLength: 1, maxLength: 3 }),
      fc.boolean(),
    )
    .map(([kind, access, levels, hash]) => {
      const filter = [...levels, ...(hash ? ["#"] : [])].join("/");
      return `${kind} ${access === "" ? "" : `${access} `}${filter}`;
    });
  const aclText = fc
    .array(
      fc.oneof(
        ruleLine,
        fc.constantFrom(...names).map((n) => `user ${n}`),
      ),
      {
        maxLength: 8,
      },
    )
    .map((lines) => lines.join("\n"));
  const identity = fc.record({
    clientId: fc.constantFrom("a", "b", "a/b", "a+"),
    username: fc.constantFrom<string | undefined>("a", "b", undefined, "b#"),
  });
  const topic = fc
    .array(fc.constantFrom("a", "b", "$a", "z", "a/b"), { minLength: 1, maxLength: 4 })
    .map((l) => l.join("/"));

  it("publish and receive decisions match Mosquitto's algorithm", () => {
    fc.assert(
      fc.property(aclText, identity, topic, (text, who, t) => {
        const acl = parseMosquittoAcl(text);
        const client = acl.forClient(who);
        expect(client.canPublish(t)).toBe(referenceCheck(acl.rules, who, t, "write"));
        expect(client.canReceive(t)).toBe(referenceCheck(acl.rules, who, t, "read"));
      }),
      { numRuns: 3000 },
    );
  });

  it("a granted subscription's topics are readable unless a deny rule names them", () => {
    fc.assert(
      fc.property(aclText, identity, filterArb, (text, who, filter) => {
        const acl = parseMosquittoAcl(text);
        const client = acl.forClient(who);
        if (!client.canSubscribe(filter)) return;
        const hasDeny = acl.rules.some((r) => r.access === "deny");
        for (const t of universe) {
          if (!topicMatchesFilter(filter, t)) continue;
          if (!hasDeny) expect(client.canReceive(t), t).toBe(true);
        }
      }),
      { numRuns: 300 },
    );
  });
});
