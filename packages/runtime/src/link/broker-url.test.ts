import { describe, expect, it } from "vitest";
import { brokerAddress, brokerUrlProblem, redactedUrl } from "./broker-url.js";

describe("broker URLs in messages", () => {
  it("never show a password", () => {
    expect(redactedUrl("mqtts://ops:S3cr3t@broker:8883")).toBe("mqtts://ops:***@broker:8883");
    expect(redactedUrl("mqtt://broker:1883")).toBe("mqtt://broker:1883");
    expect(redactedUrl("ops:S3cr3t@broker")).toBe("***@broker");
    expect(brokerUrlProblem("https://ops:S3cr3t@h", undefined)).not.toMatch(/S3cr3t/);
    expect(brokerUrlProblem("not a url ops:S3cr3t@h", undefined)).not.toMatch(/S3cr3t/);
  });

  it("show where a client connects: WebSocket path, Unix socket, other servers", () => {
    expect(brokerAddress({ protocol: "mqtt", hostname: "h", port: 1883 })).toBe("mqtt://h:1883");
    expect(brokerAddress({ protocol: "wss", hostname: "h", port: 443, path: "/mqtt" })).toBe(
      "wss://h:443/mqtt",
    );
    expect(brokerAddress({ protocol: "mqtt", unixSocket: true, path: "/run/m.sock" })).toBe(
      "mqtt+unix:/run/m.sock",
    );
    expect(brokerAddress({ protocol: "mqtt", hostname: "a", port: 1, servers: [{}, {}, {}] })).toBe(
      "mqtt://a:1 (or 2 other servers in turn)",
    );
  });
});
