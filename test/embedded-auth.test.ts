/**
 * The embedded broker with accounts and the shipped Mosquitto ACL
 * (docs/mosquitto-acl.conf, plus a second server's block made from the
 * first as the file says): each account connects only with its username as
 * client id, callers and servers stay on their own topics, retained
 * presence and last wills included, and mqrpc works end to end.
 *
 * Refused publishes are dropped without a word on MQTT 3.1.1, so each proof
 * that one never went out races the broker's report of the refusal
 * (`onDenied`) against the forged message arriving at a client allowed to
 * read it: whichever comes first decides, no sleeps.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  createMqttServer,
  type EmbeddedBroker,
  type EmbeddedBrokerDenial,
  type EmbeddedBrokerOptions,
  startEmbeddedBroker,
} from "@mqrpc/runtime";
import { connectAsync, type IClientOptions, type MqttClient } from "mqtt";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Presence_State, PresenceSchema } from "../packages/runtime/src/gen/mqrpc/v1/wire_pb.js";
import { encodePresence } from "../packages/runtime/src/link/presence.js";
import { TopicScheme } from "../packages/runtime/src/wire/topic-scheme.js";
import type { BrokerTarget } from "./brokers/targets.js";
import { TestService } from "./gen/mqrpc/interop/v1/test_pb.js";
import {
  type Account,
  documentedAcl as acl,
  emptyCallOnlyAcl,
  forgedEnd,
  users,
} from "./support/documented-acl.js";
import { interopService } from "./support/interop-service.js";
import { Closer, startServer, startTransport } from "./support/rpc-fixture.js";

const SERVER = "dev-42";
const scheme = new TopicScheme();
const METHOD = scheme.requestTopic(SERVER, TestService.typeName, "EmptyCall", "alice");

/** The refusals the broker reported, with a wait for one to come. */
class Denials {
  readonly seen: EmbeddedBrokerDenial[] = [];
  private readonly waiters = new Set<() => void>();
  readonly report = (denial: EmbeddedBrokerDenial) => {
    this.seen.push(denial);
    for (const w of [...this.waiters]) w();
  };

  next(match: (d: EmbeddedBrokerDenial) => boolean): Promise<EmbeddedBrokerDenial> {
    return new Promise((resolve) => {
      const check = () => {
        const found = this.seen.find(match);
        if (found === undefined) return;
        this.waiters.delete(check);
        resolve(found);
      };
      this.waiters.add(check);
      check();
    });
  }
}

/** Messages a client received, with a wait for one to come. */
class Inbox {
  readonly messages: Array<{ topic: string; payload: Buffer; retain: boolean }> = [];
  private readonly waiters = new Set<() => void>();

  constructor(client: MqttClient) {
    client.on("message", (topic, payload, packet) => {
      this.messages.push({ topic, payload, retain: packet.retain });
      for (const w of [...this.waiters]) w();
    });
  }

  topics(): string[] {
    return this.messages.map((m) => m.topic);
  }

  /** Messages published while subscribed, not retained ones delivered on subscribing. */
  live(): Array<{ topic: string; payload: Buffer; retain: boolean }> {
    return this.messages.filter((m) => !m.retain);
  }

  /** The first message on `topic` (only a live one when `live`). */
  next(topic: string, live = false): Promise<{ topic: string; payload: Buffer; retain: boolean }> {
    return new Promise((resolve) => {
      const check = () => {
        const found = this.messages.find((m) => m.topic === topic && !(live && m.retain));
        if (found === undefined) return;
        this.waiters.delete(check);
        resolve(found);
      };
      this.waiters.add(check);
      check();
    });
  }
}

describe("embedded broker with users and the shipped ACL", () => {
  const closer = new Closer();
  let broker: EmbeddedBroker;
  let denials: Denials;

  async function start(extra: Partial<EmbeddedBrokerOptions> = {}) {
    denials = new Denials();
    broker = closer.add(
      await startEmbeddedBroker({ users, acl, onDenied: denials.report, ...extra }),
      (b) => b.close(),
    );
  }
  beforeEach(() => start());
  afterEach(() => closer.closeAll());

  const target = (): BrokerTarget => ({
    name: "aedes-auth",
    kind: "aedes",
    url: broker.url,
    mqttOptions: { protocolVersion: 4 },
    sharedSubscriptions: false,
  });
  /** MQTT options for an account: its password and its username as client id. */
  const as = (account: Account, overrides: IClientOptions = {}): IClientOptions => ({
    username: account,
    password: users[account],
    clientId: account,
    reconnectPeriod: 200,
    ...overrides,
  });
  /** The same for an mqrpc server or transport (`mqtt` option). */
  const mqttAs = (account: Account) => ({ url: broker.url, ...as(account) });
  const connect = async (options: IClientOptions) =>
    closer.add(await connectAsync(broker.url, options), (c) => c.endAsync(true));
  const refusal = (options: IClientOptions) =>
    connectAsync(broker.url, { ...options, reconnectPeriod: 0 }).then(
      async (c) => {
        await c.endAsync(true);
        return "connected";
      },
      (e: { code?: number }) => e.code,
    );

  /**
   * Whether a publish that `observer` could read arrived live (true) or the
   * broker reported refusing it first (false).
   */
  const delivered = (observer: Inbox, topic: string, action = "publish") =>
    Promise.race([
      observer.next(topic, true).then(() => true),
      denials.next((d) => d.action === action && d.topic === topic).then(() => false),
    ]);

  async function serve() {
    const server = await startServer(closer, target(), { serverId: SERVER, mqtt: mqttAs(SERVER) });
    server.service(TestService, interopService);
    return server;
  }

  it("runs an mqrpc server and a caller end to end with their credentials, refusing nothing", async () => {
    await serve();
    const alice = createClient(
      TestService,
      startTransport(closer, target(), { serverId: SERVER, mqtt: mqttAs("alice") }),
    );
    await alice.emptyCall({});
    const reply = await alice.unaryCall({ responseSize: 8 });
    expect(reply.payload?.body.byteLength).toBe(8);
    expect(denials.seen).toEqual([]);
  });

  it("refuses a wrong password, an unknown account and a missing username", async () => {
    expect(await refusal({ ...as("alice"), password: "guess" })).toBe(4);
    const { password: _none, ...noPassword } = as("alice");
    expect(await refusal(noPassword)).toBe(4);
    expect(await refusal({ username: "mallory", password: "x", clientId: "mallory" })).toBe(4);
    expect(await refusal({ clientId: "alice" })).toBe(5);
    expect(denials.seen.map((d) => [d.action, d.returnCode])).toEqual([
      ["connect", 4],
      ["connect", 4],
      ["connect", 4],
      ["connect", 5],
    ]);
  });

  it("fails createMqttServer with the broker's reason when it refuses the login, instead of waiting forever", async () => {
    await expect(
      createMqttServer({
        serverId: SERVER,
        mqtt: { ...mqttAs(SERVER), password: "guess" },
        routes: (s) => s.service(TestService, interopService),
      }),
    ).rejects.toThrow(
      /mqtt option: the MQTT broker refused the connection: .*Bad username or password/,
    );
  });

  it("refuses an account using another account's client id: no kicking it off, no reading its replies", async () => {
    await serve();
    const aliceLink = await connect(as("alice"));
    let aliceDropped = 0;
    aliceLink.on("close", () => aliceDropped++);
    const alice = createClient(
      TestService,
      startTransport(closer, target(), { serverId: SERVER, mqtt: aliceLink }),
    );
    await alice.emptyCall({});

    // Bob, with his own valid password, claims Alice's and the server's client ids.
    expect(await refusal(as("bob", { clientId: "alice" }))).toBe(2);
    expect(await refusal(as("bob", { clientId: SERVER }))).toBe(2);
    const reason = denials.seen.find((d) => d.returnCode === 2)?.reason;
    expect(reason).toMatch(/client id "alice" is not the username "bob".*usernameAsClientId/);

    // As himself he cannot subscribe to her replies (SUBACK 0x80).
    const bob = await connect(as("bob"));
    const stolen = new Inbox(bob);
    for (const filter of [scheme.replyFilter("alice"), "mqrpc/c/#", "#"]) {
      await expect(bob.subscribeAsync(filter, { qos: 1 }), filter).rejects.toThrow(/Subscribe/);
    }
    const replies = await Promise.all(
      Array.from({ length: 10 }, () => alice.unaryCall({ responseSize: 8 })),
    );
    expect(replies.every((r) => r.payload?.body.byteLength === 8)).toBe(true);
    expect(aliceDropped).toBe(0);
    expect(stolen.messages).toEqual([]);
  });

  it("keeps a caller from publishing under another caller's key", async () => {
    // The server account's view of its request topics (no mqrpc server: one connection per account).
    const serverView = await connect(as(SERVER));
    const requests = new Inbox(serverView);
    await serverView.subscribeAsync(scheme.requestFilter(SERVER), { qos: 1 });

    const bob = await connect(as("bob"));
    const dropped = new Promise<never>((_resolve, reject) =>
      bob.once("close", () => reject(new Error("the broker closed the connection"))),
    );
    const sticky = scheme.requestTopic(SERVER, TestService.typeName, "EmptyCall", "alice", "x");
    // Acknowledged and dropped, as Mosquitto does on 3.1.1; the connection stays.
    await Promise.race([bob.publishAsync(METHOD, forgedEnd(1), { qos: 1 }), dropped]);
    await Promise.race([bob.publishAsync(sticky, forgedEnd(1), { qos: 0 }), dropped]);
    expect(await delivered(requests, METHOD)).toBe(false);
    expect(await delivered(requests, sticky)).toBe(false);

    // Bob stays connected and may call under his own key.
    const own = scheme.requestTopic(SERVER, TestService.typeName, "EmptyCall", "bob");
    await Promise.race([bob.publishAsync(own, forgedEnd(1), { qos: 1 }), dropped]);
    await Promise.race([requests.next(own), dropped]);
    expect(requests.topics()).toEqual([own]);
  });

  it("keeps a server account from writing another server's reply topics and presence", async () => {
    const aliceView = await connect(as("alice"));
    const seen = new Inbox(aliceView);
    await aliceView.subscribeAsync([scheme.replyFilter("alice"), "mqrpc/p/#"], { qos: 1 });

    // dev-43 is compromised.
    const attacker = await connect(as("dev-43"));
    const otherReplies = scheme.replyTopic("alice", SERVER);
    const otherPresence = scheme.presenceTopic(SERVER, SERVER);
    const offline = Buffer.from(encodePresence(SERVER, Presence_State.OFFLINE, false, 1));
    await attacker.publishAsync(otherReplies, forgedEnd(1), { qos: 1 });
    await attacker.publishAsync(otherPresence, offline, { qos: 1, retain: true });
    expect(await delivered(seen, otherReplies)).toBe(false);
    expect(await delivered(seen, otherPresence)).toBe(false);

    // Its own reply topic and presence are its to write.
    const ownReplies = scheme.replyTopic("alice", "dev-43");
    await attacker.publishAsync(ownReplies, forgedEnd(1), { qos: 1 });
    await seen.next(ownReplies);
    expect(seen.topics()).toEqual([ownReplies]);
  });

  it("keeps a caller from poisoning a server's retained presence; new callers still reach it", async () => {
    await serve();
    const observer = await connect(as("alice"));
    const presence = new Inbox(observer);
    const topic = scheme.presenceTopic(SERVER, SERVER);
    await observer.subscribeAsync(scheme.presenceFilter(SERVER), { qos: 1 });
    const announced = fromBinary(PresenceSchema, (await presence.next(topic)).payload);
    expect(announced.state).toBe(Presence_State.ONLINE);
    await observer.endAsync();

    // Bob overwrites it with OFFLINE of the very incarnation that runs, and with nothing.
    const bob = await connect(as("bob"));
    const watch = await connect(as("dev-43"));
    const live = new Inbox(watch);
    await watch.subscribeAsync("mqrpc/p/#", { qos: 1 });
    const poison = encodePresence(SERVER, Presence_State.OFFLINE, false, announced.incarnation);
    await bob.publishAsync(topic, Buffer.from(poison), { qos: 1, retain: true });
    expect(await delivered(live, topic)).toBe(false);
    expect(denials.seen.filter((d) => d.action === "publish").length).toBe(1);
    await bob.publishAsync(topic, Buffer.alloc(0), { qos: 1, retain: true });
    expect(denials.seen.filter((d) => d.action === "publish").length).toBe(2);
    expect(live.live()).toEqual([]);

    // A caller arriving now still finds the server (a well-behaved call: 10 s budget).
    const alice = createClient(
      TestService,
      startTransport(closer, target(), { serverId: SERVER, mqtt: mqttAs("alice") }),
    );
    await alice.emptyCall({}, { timeoutMs: 10_000 });
  });

  it("does not publish a last will on a topic the client cannot write; a server's own will goes out", async () => {
    const observer = await connect(as("alice"));
    const seen = new Inbox(observer);
    await observer.subscribeAsync("mqrpc/p/#", { qos: 1 });
    const will = (serverId: string) => ({
      topic: scheme.presenceTopic(serverId, serverId),
      payload: Buffer.from(encodePresence(serverId, Presence_State.OFFLINE, false, 7)),
      qos: 1 as const,
      retain: true,
    });

    // Bob leaves a will that marks dev-42 offline, then drops his connection.
    const bob = await connectAsync(
      broker.url,
      as("bob", { will: will(SERVER), reconnectPeriod: 0 }),
    );
    bob.stream.destroy();
    expect(await delivered(seen, will(SERVER).topic, "will")).toBe(false);

    // dev-43's will on its own presence is published.
    const server = await connectAsync(
      broker.url,
      as("dev-43", { will: will("dev-43"), reconnectPeriod: 0 }),
    );
    server.stream.destroy();
    expect(await delivered(seen, will("dev-43").topic, "will")).toBe(true);
    expect(seen.topics()).toEqual([will("dev-43").topic]);
    await Promise.all([bob.endAsync(true), server.endAsync(true)]);
  });
});

describe("embedded broker with a per-method ACL", () => {
  const closer = new Closer();
  afterEach(() => closer.closeAll());

  it("fails a call to a method the caller may not use at its deadline, and leaves its other calls alone", async () => {
    expect(emptyCallOnlyAcl).not.toBe(acl);
    const broker = closer.add(await startEmbeddedBroker({ users, acl: emptyCallOnlyAcl }), (b) =>
      b.close(),
    );
    const target: BrokerTarget = {
      name: "aedes-auth",
      kind: "aedes",
      url: broker.url,
      mqttOptions: { protocolVersion: 4 },
      sharedSubscriptions: false,
    };
    const mqtt = (account: Account) => ({
      url: broker.url,
      username: account,
      password: users[account],
      clientId: account,
      reconnectPeriod: 200,
    });
    const server = await startServer(closer, target, { serverId: SERVER, mqtt: mqtt(SERVER) });
    server.service(TestService, interopService);
    const alice = createClient(
      TestService,
      startTransport(closer, target, { serverId: SERVER, mqtt: mqtt("alice") }),
    );
    await alice.emptyCall({});
    const error = await alice
      .unaryCall({}, { timeoutMs: 1500 })
      .catch((e: unknown) => ConnectError.from(e));
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.DeadlineExceeded);
    await alice.emptyCall({});
  });
});

describe("embedded broker options", () => {
  const closer = new Closer();
  afterEach(() => closer.closeAll());

  async function start(options: EmbeddedBrokerOptions) {
    return closer.add(await startEmbeddedBroker(options), (b) => b.close());
  }

  it("refuses unknown options, bad values and malformed ACL lines, naming them", async () => {
    await expect(startEmbeddedBroker({ acll: "" } as EmbeddedBrokerOptions)).rejects.toThrow(
      /unknown option "acll"/,
    );
    await expect(startEmbeddedBroker({ acl: "user alice\ntopic sometimes x" })).rejects.toThrow(
      /option acl, line 2: unknown access "sometimes"/,
    );
    await expect(startEmbeddedBroker({ acl: "pattern read a/x%c" })).rejects.toThrow(
      /option acl, line 1: %c and %u must be whole topic levels/,
    );
    await expect(
      startEmbeddedBroker({ users: { a: "b" }, authenticate: () => true }),
    ).rejects.toThrow(/either option users or option authenticate/);
    await expect(
      startEmbeddedBroker({ users: { a: 1 } as unknown as Record<string, string> }),
    ).rejects.toThrow(/option users/);
    await expect(
      startEmbeddedBroker({ authenticate: "yes" } as unknown as EmbeddedBrokerOptions),
    ).rejects.toThrow(/option authenticate must be a function/);
  });

  it("takes an authenticate hook; a failing hook refuses with server unavailable", async () => {
    const broker = await start({
      authenticate: async (username, password, clientId) =>
        username === "svc" && Buffer.from(password ?? []).toString() === "pw" && clientId === "svc",
    });
    const client = closer.add(
      await connectAsync(broker.url, { username: "svc", password: "pw", clientId: "svc" }),
      (c) => c.endAsync(true),
    );
    expect(client.connected).toBe(true);
    const refused = (options: IClientOptions) =>
      connectAsync(broker.url, { ...options, reconnectPeriod: 0 }).then(
        () => "connected",
        (e: { code?: number }) => e.code,
      );
    expect(await refused({ username: "svc", password: "no", clientId: "svc" })).toBe(4);

    const failing = await start({
      authenticate: () => {
        throw new Error("directory down");
      },
    });
    const code = await connectAsync(failing.url, {
      username: "svc",
      password: "pw",
      clientId: "svc",
      reconnectPeriod: 0,
    }).then(
      () => "connected",
      (e: { code?: number }) => e.code,
    );
    expect(code).toBe(3);
  });

  it("lets usernameAsClientId be turned off: the ACL then binds %c to whatever id the client chose", async () => {
    const broker = await start({ users, acl, usernameAsClientId: false });
    const bob = closer.add(
      await connectAsync(broker.url, {
        username: "bob",
        password: users.bob,
        clientId: "bob-laptop",
        reconnectPeriod: 0,
      }),
      (c) => c.endAsync(true),
    );
    await bob.subscribeAsync(scheme.replyFilter("bob-laptop"), { qos: 1 });
    await expect(bob.subscribeAsync(scheme.replyFilter("bob"), { qos: 1 })).rejects.toThrow();
  });

  it("holds back the messages a deny line covers within a granted subscription, retained ones too", async () => {
    const denials = new Denials();
    const broker = await start({
      acl: "user reader\ntopic read news/#\ntopic deny news/secret\nuser writer\ntopic write news/#",
      onDenied: denials.report,
    });
    const login = (name: string) => ({ username: name, clientId: name, reconnectPeriod: 0 });
    const writer = closer.add(await connectAsync(broker.url, login("writer")), (c) =>
      c.endAsync(true),
    );
    await writer.publishAsync("news/secret", "retained secret", { qos: 1, retain: true });
    const reader = closer.add(await connectAsync(broker.url, login("reader")), (c) =>
      c.endAsync(true),
    );
    const inbox = new Inbox(reader);
    const refusedDelivery = (topic: string) =>
      Promise.race([
        inbox.next(topic).then(() => false),
        denials.next((d) => d.action === "receive" && d.topic === topic).then(() => true),
      ]);
    await reader.subscribeAsync("news/#", { qos: 1 });
    expect(await refusedDelivery("news/secret")).toBe(true);
    await writer.publishAsync("news/public", "hello", { qos: 1 });
    await inbox.next("news/public");
    expect(inbox.topics()).toEqual(["news/public"]);
  });

  it("applies custom authorizePublish and authorizeSubscribe hooks after the ACL", async () => {
    const denied: EmbeddedBrokerDenial[] = [];
    const broker = await start({
      authorizeSubscribe: (_client, filter) => !filter.startsWith("secret"),
      authorizePublish: async (client, publish) =>
        !(publish.topic === "public/shout" && client.clientId === "loud"),
      onDenied: (d) => denied.push(d),
    });
    const reader = closer.add(
      await connectAsync(broker.url, { clientId: "reader", reconnectPeriod: 0 }),
      (c) => c.endAsync(true),
    );
    await expect(reader.subscribeAsync("secret/#", { qos: 1 })).rejects.toThrow();
    const inbox = new Inbox(reader);
    await reader.subscribeAsync("public/#", { qos: 1 });
    const loud = closer.add(
      await connectAsync(broker.url, { clientId: "loud", reconnectPeriod: 0 }),
      (c) => c.endAsync(true),
    );
    await loud.publishAsync("public/shout", "!", { qos: 1 });
    await loud.publishAsync("public/talk", ".", { qos: 1 });
    await inbox.next("public/talk");
    expect(inbox.topics()).toEqual(["public/talk"]);
    expect(denied.map((d) => [d.action, d.topic, d.reason])).toEqual([
      ["subscribe", "secret/#", "refused by authorizeSubscribe"],
      ["publish", "public/shout", "refused by authorizePublish"],
    ]);
  });
});
