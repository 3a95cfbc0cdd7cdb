/**
 * An upstream's URL as the gateway's options take it, turned into where the
 * gateway's HTTP/2 connection goes (upstream-channel.ts).
 */

/** Where the gateway connects for one upstream. */
export interface UpstreamAddress {
  /** The URL as given, for messages. */
  readonly url: string;
  /**
   * The HTTP/2 authority URL (`http://host:port`, `https://host:port`;
   * `http://localhost` for a Unix socket), which also gives `:authority`.
   */
  readonly authority: string;
  /** Whether the URL asks for TLS (`https:`). */
  readonly secure: boolean;
  /** The Unix socket path, for `unix:` URLs. */
  readonly socketPath?: string;
}

/**
 * Parses `http://host:port` (cleartext HTTP/2, "h2c"), `https://host:port`
 * (TLS) or `unix:/path/to.sock` (also `unix:///path/to.sock`). `option`
 * names the option in error messages, e.g. `upstreams[1].url`.
 *
 * @throws Error naming `option` for anything else (no path, query or
 *   credentials in the URL; a port is required for `http:`).
 */
export function parseUpstreamUrl(url: string, option: string): UpstreamAddress {
  if (typeof url !== "string" || url === "") {
    throw new Error(
      `${option} must be a URL such as "http://127.0.0.1:50051" or "unix:/run/app.sock"`,
    );
  }
  if (url.startsWith("unix:")) {
    const path = url.startsWith("unix://")
      ? url.slice("unix://".length)
      : url.slice("unix:".length);
    if (!path.startsWith("/")) {
      throw new Error(
        `${option}: "${url}" needs an absolute socket path, e.g. "unix:/run/app.sock"`,
      );
    }
    return { url, authority: "http://localhost", secure: false, socketPath: path };
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(
      `${option}: "${url}" is not a URL; use "http://host:port", "https://host:port" or "unix:/path"`,
    );
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new Error(
      `${option}: "${url}" has scheme ${parsed.protocol}; use "http://host:port", "https://host:port" or "unix:/path"`,
    );
  }
  if (
    (parsed.pathname !== "" && parsed.pathname !== "/") ||
    parsed.search !== "" ||
    parsed.hash !== "" ||
    parsed.username !== "" ||
    parsed.password !== ""
  ) {
    throw new Error(`${option}: "${url}" must be just scheme, host and port (no path or query)`);
  }
  const secure = parsed.protocol === "https:";
  if (parsed.port === "" && !secure) {
    throw new Error(`${option}: "${url}" needs a port, e.g. "http://127.0.0.1:50051"`);
  }
  return { url, authority: parsed.origin, secure };
}

/**
 * Checks an upstream URL as `createGrpcGateway` will take it (an upstream's
 * `url`), without connecting anywhere: a command line or a configuration
 * file can refuse a bad one before it starts a gateway, which first
 * connects to the MQTT broker.
 *
 * Accepted forms:
 * - `http://host:port`: cleartext HTTP/2 ("h2c"); the port is required.
 * - `https://host[:port]`: HTTP/2 over TLS (port 443 unless given).
 * - `unix:/path/to.sock` or `unix:///path/to.sock`: cleartext HTTP/2 on a
 *   Unix socket, an absolute path.
 *
 * Host may be a name, an IPv4 address or a bracketed IPv6 address
 * (`http://[::1]:50051`).
 *
 * @param url - the URL to check.
 * @param option - what to call the URL in messages (default `url`), e.g.
 *   `upstreams[1].url` or a command-line flag.
 * @throws Error whose message starts with `option` and names the problem
 *   for an empty URL, one that does not parse (`127.0.0.1:50051`), another
 *   scheme (`ftp://h:1`), an `http:` URL without a port, a URL with a
 *   path, query, fragment or credentials, and a `unix:` URL without an
 *   absolute path; e.g. `url: "ftp://h:1" has scheme ftp:; use
 *   "http://host:port", "https://host:port" or "unix:/path"`.
 */
export function checkUpstreamUrl(url: string, option = "url"): void {
  parseUpstreamUrl(url, option);
}
