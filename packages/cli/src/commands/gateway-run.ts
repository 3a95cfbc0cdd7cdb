/** What `mqrpc gateway` does (its options: gateway.ts). */
import { checkUpstreamUrl, createGrpcGateway, type GrpcUpstreamOptions } from "@mqrpc/gateway";
import { logBrokerChanges } from "../broker-changes.js";
import { probeBroker } from "../broker-probe.js";
import { isPlainTopicLevel, resolveConnection } from "../connection.js";
import { CliError, EXIT_OK, EXIT_USAGE } from "../exit-codes.js";
import { logEvent, serverEventLogger } from "../output.js";
import {
  listenForStop,
  takenOverError,
  unlessStopped,
  untilStopOrTakeover,
} from "../stop-signal.js";
import type { GatewayFlags } from "./gateway.js";
import { gatewayStartError } from "./gateway-errors.js";

/**
 * Runs a gateway until SIGINT or SIGTERM, logging its start, its routes,
 * the server's warnings, the broker connection's changes and its stop.
 *
 * @throws CliError for a bad `--upstream` (its form or URL) or `--shared`
 *   group, or `--upstream-keepalive-timeout` without
 *   `--upstream-keepalive-time` (exit 2, before any broker contact) and for a start the library
 *   refuses, its message in the command line's terms (gateway-errors.ts);
 *   otherwise as `createGrpcGateway` throws.
 */
export async function gateway(flags: GatewayFlags): Promise<number> {
  const connection = resolveConnection(flags);
  const upstreams = flags.upstream.map(parseUpstream);
  if (typeof flags.shared === "string" && !isPlainTopicLevel(flags.shared)) {
    throw new CliError(
      `--shared: share group "${flags.shared}" must be A-Z a-z 0-9 _ - only (a topic level as it is)`,
      EXIT_USAGE,
    );
  }
  if (flags.upstreamKeepaliveTimeout !== undefined && flags.upstreamKeepaliveTime === undefined) {
    throw new CliError(
      "--upstream-keepalive-timeout needs --upstream-keepalive-time: keepalive PINGs are off without it",
      EXIT_USAGE,
    );
  }
  const stop = listenForStop();
  try {
    const unreachable = await probeBroker(connection, stop.signal);
    if (unreachable !== undefined) logEvent("warn", `${unreachable}; waiting for it`);
    const commandLine = {
      upstreams: flags.upstream.map((value, i) => ({ value, url: upstreams[i]?.url ?? value })),
      startTimeoutMs: flags.startTimeout,
    };
    const running = await unlessStopped(
      createGrpcGateway({
        mqtt: connection.options,
        serverId: flags.serverId,
        topicPrefix: connection.topicPrefix,
        upstreams,
        reflection: flags.reflection,
        startTimeoutMs: flags.startTimeout,
        upstreamConnectTimeoutMs: flags.upstreamConnectTimeout,
        ...(flags.upstreamKeepaliveTime !== undefined
          ? { upstreamKeepaliveTimeMs: flags.upstreamKeepaliveTime }
          : {}),
        ...(flags.upstreamKeepaliveTimeout !== undefined
          ? { upstreamKeepaliveTimeoutMs: flags.upstreamKeepaliveTimeout }
          : {}),
        shutdownTimeoutMs: flags.shutdownTimeout,
        ...(flags.shared !== undefined ? { shared: flags.shared } : {}),
        ...(flags.maxMessageSize !== undefined ? { maxMessageBytes: flags.maxMessageSize } : {}),
        logger: serverEventLogger(),
      }).catch((e: unknown) => {
        throw gatewayStartError(e, commandLine);
      }),
      stop.signal,
      (g) => g.close(),
    );
    logBrokerChanges(running.server.mqttClient, connection.url);
    for (const route of running.services())
      logEvent("route", `${route.service} -> ${route.upstream}`);
    logEvent(
      "online",
      `${running.serverId} (instance ${running.server.instanceId}) on ${connection.url}`,
    );
    const takenOver = await untilStopOrTakeover(stop.signal, running.server);
    if (takenOver !== undefined) {
      await running.close();
      throw takenOverError(flags.serverId, takenOver);
    }
    logEvent("stopping", `on ${stop.received() ?? "signal"}`);
    await running.close();
    logEvent("offline", running.serverId);
    return EXIT_OK;
  } catch (e) {
    if (stop.received() !== undefined) return EXIT_OK;
    throw e;
  } finally {
    stop.dispose();
  }
}

/**
 * `URL`, `URL=svc.A,svc.B` or `URL=@descriptor-set-file`, its URL checked
 * as `createGrpcGateway` will (`checkUpstreamUrl`), which would refuse a
 * bad one only after the broker was looked at.
 */
function parseUpstream(value: string): GrpcUpstreamOptions {
  const at = value.indexOf("=");
  const url = at < 0 ? value : value.slice(0, at);
  const spec = at < 0 ? undefined : value.slice(at + 1);
  if (url === "" || spec === "") {
    throw new CliError(
      `--upstream "${value}": write URL, URL=pkg.Service[,…] or URL=@descriptor-set`,
      EXIT_USAGE,
    );
  }
  try {
    // `--upstream "ftp://h:1=a.B": "ftp://h:1" has scheme ftp:; use …`
    checkUpstreamUrl(url, `--upstream "${value}"`);
  } catch (e) {
    throw new CliError((e as Error).message, EXIT_USAGE, { cause: e });
  }
  if (spec === undefined) return { url };
  if (spec.startsWith("@")) return { url, descriptorSet: spec.slice(1) };
  return {
    url,
    services: spec
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== ""),
  };
}
