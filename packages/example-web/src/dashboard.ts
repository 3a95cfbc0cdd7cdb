/**
 * The dashboard page: one MQTT over WebSockets connection from the browser
 * to the broker, shared by everything on the page. It lists the devices
 * online from their retained presence, and calls the selected one with
 * the generated DeviceService client over an mqrpc transport on the same
 * connection: GetInfo, SetLed, StreamTelemetry into a live chart, and
 * UploadFirmware with a progress bar. No backend: the page talks to the
 * devices through the broker.
 *
 * The broker URL comes from `?broker=ws://…` or the server's config.json.
 */
import "uplot/dist/uPlot.min.css";
import "./dashboard.css";
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { createMqttTransport, decodeTopicSegment, type MqttTransport } from "@mqrpc/runtime";
import { Presence_State, PresenceSchema } from "@mqrpc/runtime/proto";
import mqtt, { type MqttClient } from "mqtt";
import uPlot from "uplot";
import { createDeviceServiceClient } from "../../example-device/src/gen/mqrpc/example/device/v1/device_mqrpc.js";
import type { Telemetry } from "../../example-device/src/gen/mqrpc/example/device/v1/device_pb.js";

/** The topic prefix the devices use (mqrpc's default). */
const TOPIC_PREFIX = "mqrpc";
/** Telemetry points kept in the chart. */
const CHART_POINTS = 240;
/** Bytes per UploadFirmware message. */
const UPLOAD_PIECE_BYTES = 64 * 1024;

type DeviceClient = ReturnType<typeof createDeviceServiceClient>;

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`#${id} is missing from the page`);
  return found as T;
}

function describeError(error: unknown): string {
  const e = ConnectError.from(error);
  return `${Code[e.code]}: ${e.rawMessage}`;
}

function showResult(target: HTMLElement, text: string, failed = false): void {
  target.textContent = text;
  target.classList.toggle("error", failed);
}

async function brokerUrl(): Promise<string> {
  const fromQuery = new URLSearchParams(location.search).get("broker");
  if (fromQuery !== null && fromQuery !== "") return fromQuery;
  const response = await fetch("config.json");
  const config = (await response.json()) as { brokerUrl?: unknown };
  if (typeof config.brokerUrl !== "string") throw new Error("config.json has no brokerUrl");
  return config.brokerUrl;
}

/** Which devices are online, from their retained presence (`{prefix}/p/{serverId}/{instance}`). */
class DeviceList {
  /** Instance states by server id. */
  private readonly devices = new Map<string, Map<string, Presence_State>>();
  private selected: string | undefined;

  constructor(
    client: MqttClient,
    private readonly onSelect: (serverId: string) => void,
  ) {
    const base = `${TOPIC_PREFIX}/p/`;
    client.subscribe(`${base}+/+`, { qos: 1 });
    client.on("message", (topic, payload) => {
      if (topic.startsWith(base)) this.onPresence(topic.slice(base.length).split("/"), payload);
    });
  }

  /** Whether `serverId` has an instance online. */
  isOnline(serverId: string): boolean {
    for (const state of this.devices.get(serverId)?.values() ?? []) {
      if (state === Presence_State.ONLINE) return true;
    }
    return false;
  }

  select(serverId: string): void {
    this.selected = serverId;
    this.render();
  }

  private onPresence(levels: string[], payload: Uint8Array): void {
    if (levels.length !== 2) return;
    let serverId: string;
    let instance: string;
    let state = Presence_State.OFFLINE;
    try {
      serverId = decodeTopicSegment(levels[0]!);
      instance = decodeTopicSegment(levels[1]!);
      // An empty retained message clears the announcement.
      if (payload.byteLength > 0) state = fromBinary(PresenceSchema, payload).state;
    } catch {
      return; // not an mqrpc presence
    }
    let instances = this.devices.get(serverId);
    if (instances === undefined) {
      instances = new Map();
      this.devices.set(serverId, instances);
    }
    instances.set(instance, state);
    this.render();
  }

  private render(): void {
    const online = [...this.devices.keys()].filter((id) => this.isOnline(id)).sort();
    const list = element<HTMLUListElement>("devices");
    list.replaceChildren(
      ...online.map((serverId) => {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = serverId;
        button.dataset.serverId = serverId;
        button.setAttribute("aria-pressed", String(serverId === this.selected));
        button.addEventListener("click", () => this.onSelect(serverId));
        const item = document.createElement("li");
        item.append(button);
        return item;
      }),
    );
    element("no-devices").hidden = online.length > 0;
  }
}

/** The live telemetry chart (uPlot): temperature and humidity against time. */
class TelemetryChart {
  private readonly times: number[] = [];
  private readonly temperatures: number[] = [];
  private readonly humidities: number[] = [];
  private samples = 0;
  private drawPending = false;
  private readonly plot: uPlot;

  constructor(private readonly container: HTMLElement) {
    this.plot = new uPlot(
      {
        width: Math.max(320, container.clientWidth),
        height: 260,
        series: [
          {},
          { label: "Temperature (°C)", stroke: "#d9534f", width: 2, scale: "°C" },
          { label: "Humidity (%)", stroke: "#2f6fd6", width: 2, scale: "%" },
        ],
        axes: [
          {},
          { scale: "°C", label: "°C" },
          { scale: "%", label: "%", side: 1, grid: { show: false } },
        ],
      },
      [[], [], []],
      container,
    );
  }

  /** Fits the chart to its container's width (once the panel is shown, and on resize). */
  fit(): void {
    this.plot.setSize({ width: Math.max(320, this.container.clientWidth), height: 260 });
  }

  clear(): void {
    this.times.length = 0;
    this.temperatures.length = 0;
    this.humidities.length = 0;
    this.samples = 0;
    this.draw();
  }

  add(sample: Telemetry): void {
    this.times.push(Number(sample.timestampMs) / 1000);
    this.temperatures.push(sample.temperatureCelsius);
    this.humidities.push(sample.humidityPercent);
    if (this.times.length > CHART_POINTS) {
      this.times.shift();
      this.temperatures.shift();
      this.humidities.shift();
    }
    this.samples++;
    // A batched stream delivers several samples at once: draw once per frame.
    if (!this.drawPending) {
      this.drawPending = true;
      requestAnimationFrame(() => {
        this.drawPending = false;
        this.draw();
      });
    }
  }

  private draw(): void {
    this.plot.setData([this.times, this.temperatures, this.humidities]);
    this.container.dataset.samples = String(this.samples);
    element("samples").textContent = `${this.samples} samples`;
  }
}

/** The selected device: its transport on the page's connection and its running telemetry stream. */
class DeviceSession {
  readonly device: DeviceClient;
  private readonly transport: MqttTransport;
  private readonly stop = new AbortController();

  constructor(
    client: MqttClient,
    readonly serverId: string,
    private readonly chart: TelemetryChart,
  ) {
    this.transport = createMqttTransport({ mqtt: client, serverId });
    this.device = createDeviceServiceClient(this.transport);
    this.chart.clear();
    void this.refreshInfo();
    void this.streamTelemetry();
  }

  async refreshInfo(): Promise<void> {
    const info = element<HTMLDListElement>("info");
    try {
      const reply = await this.device.getInfo({}, { timeoutMs: 5000 });
      const rows: Array<[string, string]> = [
        ["Device", reply.deviceId],
        ["Model", reply.model],
        ["Firmware", reply.firmwareVersion],
        ["Uptime", `${reply.uptimeSeconds} s`],
        ["Temperature", `${reply.temperatureCelsius.toFixed(1)} °C`],
      ];
      info.replaceChildren(
        ...rows.flatMap(([term, value]) => {
          const dt = document.createElement("dt");
          dt.textContent = term;
          const dd = document.createElement("dd");
          dd.textContent = value;
          dd.dataset.field = term.toLowerCase();
          return [dt, dd];
        }),
      );
    } catch (error) {
      const dd = document.createElement("dd");
      dd.className = "result error";
      dd.textContent = describeError(error);
      info.replaceChildren(dd);
    }
  }

  async setLed(brightness: number, color: string): Promise<void> {
    const result = element("led-result");
    try {
      const led = await this.device.setLed({ brightness, color }, { timeoutMs: 5000 });
      showResult(result, `LED now ${led.brightness}% ${led.color}`);
    } catch (error) {
      showResult(result, describeError(error), true);
    }
  }

  async upload(file: File): Promise<void> {
    const progress = element<HTMLProgressElement>("upload-progress");
    const result = element("upload-result");
    const image = new Uint8Array(await file.arrayBuffer());
    progress.value = 0;
    showResult(result, `uploading ${file.name}…`);
    const started = performance.now();
    // The transport takes the next piece when flow control lets it send,
    // so pieces taken is what has gone out.
    async function* pieces() {
      for (let offset = 0; offset < image.byteLength; offset += UPLOAD_PIECE_BYTES) {
        yield { data: image.subarray(offset, offset + UPLOAD_PIECE_BYTES) };
        progress.value =
          (100 * Math.min(image.byteLength, offset + UPLOAD_PIECE_BYTES)) / image.byteLength;
      }
    }
    try {
      let slot: string | null = null;
      const reply = await this.device.uploadFirmware(pieces(), {
        timeoutMs: 120_000,
        onTrailer: (trailer) => {
          slot = trailer.get("x-firmware-slot");
        },
      });
      progress.value = 100;
      const seconds = ((performance.now() - started) / 1000).toFixed(2);
      const expected = await sha256Hex(image);
      const check =
        expected === undefined
          ? "not checked (crypto.subtle needs a secure context)"
          : reply.sha256 === expected
            ? "verified"
            : "MISMATCH";
      showResult(
        result,
        `${reply.bytesReceived} bytes in ${seconds} s to slot ${slot ?? "?"}, sha256 ${reply.sha256.slice(0, 16)}… ${check}`,
        check === "MISMATCH",
      );
    } catch (error) {
      showResult(result, describeError(error), true);
    }
  }

  /** Streams telemetry into the chart until closed; after a failure it tries again. */
  private async streamTelemetry(): Promise<void> {
    const signal = this.stop.signal;
    while (!signal.aborted) {
      try {
        for await (const sample of this.device.streamTelemetry(
          { count: 0, intervalMs: 250 },
          { signal },
        )) {
          this.chart.add(sample);
        }
      } catch (error) {
        if (signal.aborted) return;
        element("samples").textContent = `stream ended: ${describeError(error)}; retrying`;
        await new Promise((resolve) => setTimeout(resolve, 2000));
      }
    }
  }

  async close(): Promise<void> {
    this.stop.abort();
    await this.transport.close();
  }
}

async function sha256Hex(bytes: Uint8Array): Promise<string | undefined> {
  if (globalThis.crypto?.subtle === undefined) return undefined;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as BufferSource));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function main(): Promise<void> {
  const url = await brokerUrl();
  element("broker-url").textContent = url;
  const client = mqtt.connect(url, { reconnectPeriod: 1000 });
  const linkState = element("link-state");
  const showLink = (state: string) => {
    linkState.textContent = state;
    linkState.dataset.state = state;
  };
  client.on("connect", () => showLink("connected"));
  client.on("reconnect", () => showLink("reconnecting"));
  client.on("offline", () => showLink("offline"));

  const chart = new TelemetryChart(element("chart"));
  let session: DeviceSession | undefined;
  const devices = new DeviceList(client, (serverId) => {
    if (session?.serverId === serverId) return;
    void session?.close();
    session = new DeviceSession(client, serverId, chart);
    devices.select(serverId);
    element("device-id").textContent = serverId;
    element("device-panel").hidden = false;
    chart.fit();
  });
  addEventListener("resize", () => chart.fit());

  element("refresh-info").addEventListener("click", () => void session?.refreshInfo());
  element<HTMLFormElement>("led-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const brightness = Number(element<HTMLInputElement>("led-brightness").value);
    void session?.setLed(brightness, element<HTMLSelectElement>("led-color").value);
  });
  element<HTMLFormElement>("upload-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const file = element<HTMLInputElement>("firmware-file").files?.[0];
    if (file === undefined) showResult(element("upload-result"), "choose a file first", true);
    else void session?.upload(file);
  });
}

main().catch((error: unknown) => {
  document.body.prepend(`dashboard failed to start: ${String(error)}`);
  throw error;
});
