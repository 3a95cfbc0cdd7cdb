/**
 * Schemas from `--schema`: a `buf build` image or a FileDescriptorSet file
 * (binary, or JSON when the name ends in `.json`), or anything `buf build`
 * takes (a directory of `.proto` files, a buf module or workspace, a
 * `.proto` file), built with the `buf` CLI.
 */
import { execFile } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fromBinary, fromJsonString } from "@bufbuild/protobuf";
import { type FileDescriptorProto, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { CliError } from "../exit-codes.js";
import { type Schema, schemaOf } from "./schema.js";

/** Largest image read from `buf build`, in bytes. */
const MAX_IMAGE_BYTES = 256 * 1024 * 1024;

/**
 * Loads and merges the schemas of `inputs` (in order; the first file of a
 * name wins).
 *
 * @throws CliError naming the input when it cannot be read, does not
 *   decode, or `buf build` fails or cannot be found.
 */
export async function loadSchemaInputs(inputs: readonly string[]): Promise<Schema> {
  const files: FileDescriptorProto[] = [];
  for (const input of inputs) files.push(...(await loadInput(input)));
  return schemaOf(`--schema ${inputs.join(" ")}`, files);
}

async function loadInput(input: string): Promise<FileDescriptorProto[]> {
  if (existsSync(input) && statSync(input).isFile() && !input.endsWith(".proto")) {
    return readDescriptorSet(input);
  }
  return bufBuild(input);
}

/** A FileDescriptorSet, or a buf image (whose `file` field is the same, with buf's extensions unknown here). */
function readDescriptorSet(path: string): FileDescriptorProto[] {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new CliError(`--schema: cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    const set = path.endsWith(".json")
      ? fromJsonString(FileDescriptorSetSchema, bytes.toString("utf8"), {
          ignoreUnknownFields: true,
        })
      : fromBinary(FileDescriptorSetSchema, bytes);
    if (set.file.length === 0) throw new Error("it holds no files");
    return set.file;
  } catch (e) {
    throw new CliError(
      `--schema: ${path} is not a buf image or FileDescriptorSet (${(e as Error).message}); ` +
        "make one with: buf build -o image.binpb",
    );
  }
}

/** Runs `buf build <input> -o -` and decodes the image it writes. */
async function bufBuild(input: string): Promise<FileDescriptorProto[]> {
  const buf = findBuf();
  const image = await new Promise<Buffer>((resolve, reject) => {
    execFile(
      buf.command,
      [...buf.args, "build", input, "-o", "-#format=binpb"],
      { encoding: "buffer", maxBuffer: MAX_IMAGE_BYTES },
      (error, stdout, stderr) => {
        if (error === null) return resolve(stdout);
        const detail = stderr.toString("utf8").trim() || error.message;
        reject(new CliError(`--schema: buf build ${input} failed: ${detail}`));
      },
    );
  });
  try {
    return fromBinary(FileDescriptorSetSchema, image).file;
  } catch (e) {
    throw new CliError(`--schema: buf build ${input} wrote no image: ${(e as Error).message}`);
  }
}

/**
 * The `buf` CLI: `@bufbuild/buf` as installed beside this package or in the
 * current project, else `buf` on the PATH.
 */
function findBuf(): { command: string; args: string[] } {
  for (const base of [import.meta.url, join(process.cwd(), "package.json")]) {
    try {
      const pkg = createRequire(base).resolve("@bufbuild/buf/package.json");
      const bin = join(pkg, "..", "bin", "buf");
      if (existsSync(bin)) return { command: process.execPath, args: [bin] };
    } catch {
      // Not installed there.
    }
  }
  const onPath = (process.env.PATH ?? "")
    .split(":")
    .map((dir) => join(dir, "buf"))
    .find((path) => existsSync(path));
  if (onPath !== undefined) return { command: onPath, args: [] };
  throw new CliError(
    "--schema with a directory or .proto file needs the buf CLI: npm install --save-dev @bufbuild/buf " +
      "(or give a buf build image / FileDescriptorSet file instead)",
  );
}
