/**
 * The MQTT topic layout of mqrpc (docs/PROTOCOL.md, "Topics"). Every name that
 * becomes a topic level goes through {@link encodeTopicSegment}, so server ids,
 * client ids and proto names are safe on every broker: NATS rejects `.` and
 * spaces, RabbitMQ treats `.` as a separator, and `+`, `#`, `/` and a leading
 * `$` mean something to MQTT itself.
 */

const UNRESERVED = /^[A-Za-z0-9_-]$/;
/** Bound of each cache in a TopicScheme; a full cache starts over. */
const CACHE_LIMIT = 4096;
const HEX = "0123456789ABCDEF";
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Encodes one topic level into the portable alphabet `A-Z a-z 0-9 _ - ~ =`.
 *
 * Letters, digits, `_` and `-` stay as they are; `.` becomes `~` so that proto
 * names such as `acme.device.v1.DeviceService` stay readable in ACL files
 * (`acme~device~v1~DeviceService`); every other UTF-8 byte becomes `=XX` in
 * upper-case hex. The encoding is a bijection, so {@link decodeTopicSegment}
 * recovers the original.
 */
export function encodeTopicSegment(value: string): string {
  if (value.length === 0) {
    throw new Error("topic segment must not be empty");
  }
  let out = "";
  let plain = true;
  for (const ch of value) {
    if (UNRESERVED.test(ch)) {
      out += ch;
    } else if (ch === ".") {
      out += "~";
      plain = false;
    } else {
      plain = false;
      for (const byte of textEncoder.encode(ch)) {
        out += `=${HEX[byte >> 4]}${HEX[byte & 15]}`;
      }
    }
  }
  return plain ? value : out;
}

/**
 * Reverses {@link encodeTopicSegment}. Throws on a level that no encoder
 * could have produced, so a forged topic never maps onto a real name.
 */
export function decodeTopicSegment(segment: string): string {
  if (segment.length === 0) {
    throw new Error("topic segment must not be empty");
  }
  if (/^[A-Za-z0-9_-]+$/.test(segment)) {
    return segment;
  }
  const bytes: number[] = [];
  for (let i = 0; i < segment.length; i++) {
    const ch = segment.charAt(i);
    if (ch === "~") {
      bytes.push(0x2e);
    } else if (ch === "=") {
      const hex = segment.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(hex)) {
        throw new Error(`invalid escape "=${hex}" in topic segment "${segment}"`);
      }
      bytes.push(Number.parseInt(hex, 16));
      i += 2;
    } else if (UNRESERVED.test(ch)) {
      bytes.push(ch.charCodeAt(0));
    } else {
      throw new Error(`invalid character "${ch}" in topic segment "${segment}"`);
    }
  }
  const decoded = textDecoder.decode(new Uint8Array(bytes));
  if (encodeTopicSegment(decoded) !== segment) {
    throw new Error(`non-canonical topic segment "${segment}"`);
  }
  return decoded;
}

/** Where a request frame was published, as parsed from its topic. */
export interface RequestAddress {
  /** Fully qualified proto service name, e.g. `acme.device.v1.DeviceService`. */
  readonly service: string;
  /** Proto method name, e.g. `GetInfo`. */
  readonly method: string;
  /** The caller's client key; replies go to its reply topic. */
  readonly clientKey: string;
  /** Set when the frame is addressed to one server instance (sticky streams). */
  readonly instance: string | undefined;
}

/**
 * Why mqrpc refuses `clientId` as the MQTT client id of a client or server,
 * or undefined when it takes it: it must be non-empty and of A-Z, a-z, 0-9,
 * "_" and "-" only. `createMqttTransport` and `createMqttServer` refuse any
 * other id (`mqtt option: ` and this reason), but only after they have
 * opened their connection to the broker; calling this first lets a command
 * line or configuration file refuse a bad id before any broker contact.
 *
 * The id serves as a client key or instance id, which appear in topics as
 * they are, because a broker ACL binds topics to the connection's client id
 * unencoded (`%c` in Mosquitto, `${clientid}` in EMQX): an id that the
 * segment encoding would change (`/`, `.`, `~`, `=`, spaces…) would let the
 * ACL pattern of one client match another's topics, or match nothing
 * (docs/SECURITY.md). Where no client id is given, the username is the
 * client id (as brokers with `use_username_as_clientid` make it), so the
 * same holds for it.
 *
 * @returns undefined for an id mqrpc takes; otherwise one sentence naming
 *   the id, e.g. `the MQTT client id "a.b" has characters other than A-Z,
 *   a-z, 0-9, "_" and "-"; broker ACLs bind mqrpc topics to the client id
 *   as it is, so mqrpc accepts only those` (or `the MQTT client id is
 *   empty`).
 */
export function clientIdProblem(clientId: string): string | undefined {
  if (clientId === "") return "the MQTT client id is empty";
  if (!/^[A-Za-z0-9_-]+$/.test(clientId)) {
    return `the MQTT client id ${JSON.stringify(clientId)} has characters other than A-Z, a-z, 0-9, "_" and "-"; broker ACLs bind mqrpc topics to the client id as it is, so mqrpc accepts only those`;
  }
  return undefined;
}

/**
 * The MQTT client id a server that is not replicated uses unless its
 * options name one (or a username): `mqrpc-s-` and the server id, as hex
 * of its UTF-8 bytes when it has other characters than A-Z, a-z, 0-9, "_"
 * and "-". Stable, so that a restarted server takes over the session its
 * previous process left on the broker instead of leaving it behind
 * (PROTOCOL.md 2.1).
 */
export function serverClientId(serverId: string): string {
  if (/^[A-Za-z0-9_-]+$/.test(serverId)) return `mqrpc-s-${serverId}`;
  const bytes = new TextEncoder().encode(serverId);
  return `mqrpc-s-x${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/**
 * Builds and parses the topics of one topic prefix. Pure: holds no state but
 * the prefix, so clients and servers that agree on the prefix agree on every
 * topic.
 *
 * - requests: `{prefix}/s/{serverId}/{service}/{method}/{clientKey}[/{instance}]`
 * - replies:  `{prefix}/c/{clientKey}/{serverId}`
 * - presence: `{prefix}/p/{serverId}/{instance}` (retained)
 */
export class TopicScheme {
  /** The validated topic prefix, one or more plain levels. */
  readonly prefix: string;
  /** Parsed request topics; callers reuse few topics, so parsing is cached. */
  private readonly parsed = new Map<string, RequestAddress | undefined>();
  /** Encoded segments of proto names and client keys, which repeat on every call. */
  private readonly encoded = new Map<string, string>();
  /**
   * Reply topics by client key and server id: a server answers the same
   * callers over and over, and one string per topic also keeps Map lookups
   * on it cheap.
   */
  private readonly replyTopics = new Map<string, Map<string, string>>();

  constructor(prefix = "mqrpc") {
    if (!/^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*$/.test(prefix)) {
      throw new Error(
        `topicPrefix "${prefix}" is invalid: use one or more levels of A-Z, a-z, 0-9, "_" and "-" separated by "/"`,
      );
    }
    this.prefix = prefix;
  }

  /** The topic a client publishes a call's frames to. */
  requestTopic(
    serverId: string,
    service: string,
    method: string,
    clientKey: string,
    instance?: string,
  ): string {
    const base = `${this.requestBase(serverId)}${this.segment(service)}/${this.segment(method)}/${this.segment(clientKey)}`;
    return instance === undefined ? base : `${base}/${this.segment(instance)}`;
  }

  /** `{prefix}/s/{serverId}/`: the part of every request topic that names the server. */
  requestBase(serverId: string): string {
    return `${this.prefix}/s/${this.segment(serverId)}/`;
  }

  /**
   * `name` as one topic level ({@link encodeTopicSegment}), cached: at most
   * 4096 names are kept, and a full cache starts over.
   */
  private segment(name: string): string {
    let encoded = this.encoded.get(name);
    if (encoded === undefined) {
      encoded = encodeTopicSegment(name);
      if (this.encoded.size >= CACHE_LIMIT) this.encoded.clear();
      this.encoded.set(name, encoded);
    }
    return encoded;
  }

  /** The one filter a non-shared server subscribes to. */
  requestFilter(serverId: string): string {
    return `${this.prefix}/s/${encodeTopicSegment(serverId)}/#`;
  }

  /**
   * Parses a request topic of `serverId`. Returns undefined for anything that
   * is not a well-formed request topic, so garbage is dropped, never thrown.
   */
  parseRequestTopic(serverId: string, topic: string): RequestAddress | undefined {
    if (this.parsed.has(topic)) return this.parsed.get(topic);
    const address = this.parseUncached(serverId, topic);
    if (this.parsed.size >= CACHE_LIMIT) this.parsed.clear();
    this.parsed.set(topic, address);
    return address;
  }

  /**
   * {@link parseRequestTopic} without its cache: `topic` split after
   * `{prefix}/s/{serverId}/` into 3 or 4 levels, each decoded with
   * {@link decodeTopicSegment}. Returns undefined for another server's
   * topic, another number of levels or a level that does not decode; never
   * throws.
   */
  private parseUncached(serverId: string, topic: string): RequestAddress | undefined {
    const base = this.requestBase(serverId);
    if (!topic.startsWith(base)) {
      return undefined;
    }
    const levels = topic.slice(base.length).split("/");
    if (levels.length !== 3 && levels.length !== 4) {
      return undefined;
    }
    try {
      const [service, method, clientKey, instance] = levels.map(decodeTopicSegment);
      if (service === undefined || method === undefined || clientKey === undefined) {
        return undefined;
      }
      return { service, method, clientKey, instance };
    } catch {
      return undefined;
    }
  }

  /**
   * The topic server `serverId` publishes a client's reply frames to. One
   * per server, so that a broker ACL lets each server write only its own
   * and a reply is attributable to the server the call went to.
   */
  replyTopic(clientKey: string, serverId: string): string {
    let byClient = this.replyTopics.get(serverId);
    if (byClient === undefined) {
      if (this.replyTopics.size >= CACHE_LIMIT) this.replyTopics.clear();
      byClient = new Map();
      this.replyTopics.set(serverId, byClient);
    }
    let topic = byClient.get(clientKey);
    if (topic === undefined) {
      topic = `${this.replyBase(clientKey)}${this.segment(serverId)}`;
      if (byClient.size >= CACHE_LIMIT) byClient.clear();
      byClient.set(clientKey, topic);
    }
    return topic;
  }

  /** `{prefix}/c/{clientKey}/`: the part of every reply topic of one client. */
  replyBase(clientKey: string): string {
    return `${this.prefix}/c/${this.segment(clientKey)}/`;
  }

  /** The one filter a client subscribes to for the replies of every server. */
  replyFilter(clientKey: string): string {
    return `${this.replyBase(clientKey)}+`;
  }

  /** The retained presence topic of one server instance. */
  presenceTopic(serverId: string, instance: string): string {
    return `${this.prefix}/p/${encodeTopicSegment(serverId)}/${encodeTopicSegment(instance)}`;
  }

  /** The filter that sees the presence of every instance of `serverId`. */
  presenceFilter(serverId: string): string {
    return `${this.prefix}/p/${encodeTopicSegment(serverId)}/+`;
  }

  /** Extracts the instance from a presence topic of `serverId`, or undefined. */
  parsePresenceTopic(serverId: string, topic: string): string | undefined {
    const base = `${this.prefix}/p/${encodeTopicSegment(serverId)}/`;
    if (!topic.startsWith(base)) {
      return undefined;
    }
    try {
      return decodeTopicSegment(topic.slice(base.length));
    } catch {
      return undefined;
    }
  }
}
