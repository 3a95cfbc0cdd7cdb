import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  clientIdProblem,
  decodeTopicSegment,
  encodeTopicSegment,
  TopicScheme,
} from "./topic-scheme.js";

const portable = /^[A-Za-z0-9_~=-]+$/;

describe("encodeTopicSegment", () => {
  it("keeps plain names and maps dots to tildes", () => {
    expect(encodeTopicSegment("dev-42_a")).toBe("dev-42_a");
    expect(encodeTopicSegment("acme.device.v1.DeviceService")).toBe("acme~device~v1~DeviceService");
  });

  it("escapes everything else as UTF-8 hex", () => {
    expect(encodeTopicSegment("a b")).toBe("a=20b");
    expect(encodeTopicSegment("a/b+#$")).toBe("a=2Fb=2B=23=24");
    expect(encodeTopicSegment("=~")).toBe("=3D=7E");
    expect(encodeTopicSegment("é")).toBe("=C3=A9");
  });

  it("rejects an empty segment", () => {
    expect(() => encodeTopicSegment("")).toThrow(/empty/);
  });

  it("round-trips any string through the portable alphabet", () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, unit: "grapheme" }), (raw) => {
        const encoded = encodeTopicSegment(raw);
        expect(encoded).toMatch(portable);
        expect(decodeTopicSegment(encoded)).toBe(raw);
      }),
    );
  });

  it("rejects segments no encoder produces", () => {
    for (const bad of ["a.b", "a b", "=2", "=zz", "=2e", "=41", "a/b", "+"]) {
      expect(() => decodeTopicSegment(bad), bad).toThrow();
    }
  });
});

describe("TopicScheme", () => {
  const scheme = new TopicScheme();

  it("builds and parses request topics", () => {
    const topic = scheme.requestTopic("dev.42", "acme.v1.Svc", "Get", "client 1");
    expect(topic).toBe("mqrpc/s/dev~42/acme~v1~Svc/Get/client=201");
    expect(scheme.parseRequestTopic("dev.42", topic)).toEqual({
      service: "acme.v1.Svc",
      method: "Get",
      clientKey: "client 1",
      instance: undefined,
    });
    const sticky = scheme.requestTopic("dev.42", "acme.v1.Svc", "Get", "c", "inst");
    expect(scheme.parseRequestTopic("dev.42", sticky)?.instance).toBe("inst");
  });

  it("returns undefined for topics that are not requests", () => {
    expect(scheme.parseRequestTopic("d", "mqrpc/s/d/a/b")).toBeUndefined();
    expect(scheme.parseRequestTopic("d", "mqrpc/s/d/a/b/c/d/e")).toBeUndefined();
    expect(scheme.parseRequestTopic("d", "mqrpc/s/other/a/b/c")).toBeUndefined();
    expect(scheme.parseRequestTopic("d", "mqrpc/s/d/a.b/m/c")).toBeUndefined();
  });

  it("names reply, presence and filter topics", () => {
    expect(scheme.replyTopic("c.1", "dev 4")).toBe("mqrpc/c/c~1/dev=204");
    expect(scheme.replyFilter("c.1")).toBe("mqrpc/c/c~1/+");
    expect(scheme.presenceTopic("d", "i")).toBe("mqrpc/p/d/i");
    expect(scheme.presenceFilter("d")).toBe("mqrpc/p/d/+");
    expect(scheme.requestFilter("d")).toBe("mqrpc/s/d/#");
    expect(scheme.parsePresenceTopic("d", "mqrpc/p/d/i~x")).toBe("i.x");
  });

  it("rejects prefixes with wildcards or empty levels, naming the option", () => {
    for (const bad of ["", "a/", "/a", "a//b", "a/+", "a/#", "a b"]) {
      expect(() => new TopicScheme(bad)).toThrow(/topicPrefix/);
    }
    expect(new TopicScheme("acme/rpc").replyTopic("c", "d")).toBe("acme/rpc/c/c/d");
  });

  it("accepts as client keys only ids that appear in topics unencoded, so ACL patterns on the client id hold", () => {
    for (const ok of ["alice-phone-4", "mqrpc_0123abcd", "A_b-9"])
      expect(clientIdProblem(ok)).toBeUndefined();
    for (const bad of [
      "",
      "alice-c/x",
      "alice.phone",
      "alice~phone",
      "a=b",
      "a b",
      "é",
      "+",
      "#",
    ]) {
      expect(clientIdProblem(bad)).toBeDefined();
    }
    expect(clientIdProblem("alice-c/x")).toContain('"alice-c/x"');
    expect(clientIdProblem("")).toBe("the MQTT client id is empty");
    expect(clientIdProblem("a.b")).toBe(
      'the MQTT client id "a.b" has characters other than A-Z, a-z, 0-9, "_" and "-"; broker ACLs bind mqrpc topics to the client id as it is, so mqrpc accepts only those',
    );
  });
});
