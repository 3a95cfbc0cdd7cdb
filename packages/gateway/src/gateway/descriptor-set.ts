/**
 * Schemas given as a FileDescriptorSet: what `buf build -o image.binpb` and
 * `protoc --descriptor_set_out --include_imports` write. A buf image is a
 * FileDescriptorSet on the wire (its extra per-file fields are skipped).
 */
import { readFile } from "node:fs/promises";
import { fromBinary } from "@bufbuild/protobuf";
import { type FileDescriptorProto, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";

/**
 * Reads a FileDescriptorSet from its bytes or from a file path. `option`
 * names the option in error messages, e.g. `upstreams[0].descriptorSet`.
 *
 * @throws Error naming `option` when the file cannot be read, the bytes are
 *   not a FileDescriptorSet, or the set holds no file.
 */
export async function readDescriptorSet(
  input: Uint8Array | string,
  option: string,
): Promise<FileDescriptorProto[]> {
  let bytes: Uint8Array;
  if (typeof input === "string") {
    try {
      bytes = await readFile(input);
    } catch (e) {
      throw new Error(
        `${option}: cannot read "${input}": ${e instanceof Error ? e.message : String(e)}`,
      );
    }
  } else if (input instanceof Uint8Array) {
    bytes = input;
  } else {
    throw new Error(`${option} must be the bytes of a FileDescriptorSet or a path to one`);
  }
  let files: FileDescriptorProto[];
  try {
    files = fromBinary(FileDescriptorSetSchema, bytes).file;
  } catch (e) {
    throw new Error(
      `${option} is not a FileDescriptorSet (buf build -o x.binpb, or protoc --descriptor_set_out --include_imports): ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  if (files.length === 0) throw new Error(`${option} holds no file`);
  return files;
}
