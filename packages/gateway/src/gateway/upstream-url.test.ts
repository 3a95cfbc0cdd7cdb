import { describe, expect, it } from "vitest";
import { checkUpstreamUrl, parseUpstreamUrl } from "./upstream-url.js";

describe("parseUpstreamUrl", () => {
  it("takes http, https and unix URLs as HTTP/2 authorities", () => {
    expect(parseUpstreamUrl("http://127.0.0.1:50051", "u")).toEqual({
      url: "http://127.0.0.1:50051",
      authority: "http://127.0.0.1:50051",
      secure: false,
    });
    expect(parseUpstreamUrl("https://device.local", "u")).toMatchObject({
      authority: "https://device.local",
      secure: true,
    });
    expect(parseUpstreamUrl("http://[::1]:7000", "u").authority).toBe("http://[::1]:7000");
    expect(parseUpstreamUrl("unix:/run/app.sock", "u")).toEqual({
      url: "unix:/run/app.sock",
      authority: "http://localhost",
      secure: false,
      socketPath: "/run/app.sock",
    });
    expect(parseUpstreamUrl("unix:///run/app.sock", "u").socketPath).toBe("/run/app.sock");
  });

  it("refuses anything else, naming the option", () => {
    expect(() => parseUpstreamUrl("", "upstreams[2].url")).toThrow(/^upstreams\[2\]\.url/);
    expect(() => parseUpstreamUrl("127.0.0.1:50051", "o")).toThrow(/is not a URL/);
    expect(() => parseUpstreamUrl("localhost:50051", "o")).toThrow(/scheme localhost:/);
    expect(() => parseUpstreamUrl("ftp://h:1", "o")).toThrow(/ftp:/);
    expect(() => parseUpstreamUrl("http://h", "o")).toThrow(/needs a port/);
    expect(() => parseUpstreamUrl("http://h:1/grpc", "o")).toThrow(/no path/);
    expect(() => parseUpstreamUrl("unix:run/app.sock", "o")).toThrow(/absolute/);
  });
});

describe("checkUpstreamUrl", () => {
  it("accepts what parseUpstreamUrl takes", () => {
    for (const url of [
      "http://127.0.0.1:50051",
      "https://device.local",
      "http://[::1]:7000/",
      "unix:/run/app.sock",
      "unix:///run/app.sock",
    ]) {
      expect(() => checkUpstreamUrl(url), url).not.toThrow();
    }
  });

  it("throws naming the option (default url) and the problem", () => {
    expect(() => checkUpstreamUrl("ftp://h:1")).toThrow(
      /^url: "ftp:\/\/h:1" has scheme ftp:; use "http:\/\/host:port", "https:\/\/host:port" or "unix:\/path"$/,
    );
    expect(() => checkUpstreamUrl("http://h", "--upstream")).toThrow(
      /^--upstream: "http:\/\/h" needs a port/,
    );
    expect(() => checkUpstreamUrl("unix:", "o")).toThrow(
      /^o: "unix:" needs an absolute socket path/,
    );
    expect(() => checkUpstreamUrl("not a url", "o")).toThrow(/^o: "not a url" is not a URL/);
    expect(() => checkUpstreamUrl("")).toThrow(/^url must be a URL such as/);
  });
});
