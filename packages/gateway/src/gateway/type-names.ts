/**
 * Fully qualified type references in file descriptors. protoc writes every
 * `type_name`, `extendee`, `input_type` and `output_type` fully qualified
 * (`.acme.v1.Payload`); some reflection servers do not — @grpc/reflection
 * (protobufjs) answers with names relative to their scope (`Payload`). The
 * gateway resolves them by protobuf's scoping rules (innermost scope
 * first), so that its registry and its own reflection answers hold what
 * protoc would have written.
 */
import { clone, isFieldSet } from "@bufbuild/protobuf";
import {
  type DescriptorProto,
  type FieldDescriptorProto,
  FieldDescriptorProto_Type,
  FieldDescriptorProtoSchema,
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";

/**
 * Copies of `files` with every relative type reference replaced by the
 * fully qualified name it resolves to among `files`; a field of a resolved
 * message or enum type without its `type` gets it. References that resolve
 * to nothing are left as they are (building a registry then says which).
 */
export function qualifyTypeNames(files: readonly FileDescriptorProto[]): FileDescriptorProto[] {
  const messages = new Set<string>();
  const enums = new Set<string>();
  for (const file of files) {
    const scope = file.package === "" ? "" : `.${file.package}`;
    for (const e of file.enumType) enums.add(`${scope}.${e.name}`);
    for (const m of file.messageType) collectTypes(m, scope, messages, enums);
  }
  const resolve = (name: string, scope: string): string => {
    if (name === "" || name.startsWith(".")) return name;
    for (let s = scope; ; s = s.slice(0, Math.max(0, s.lastIndexOf(".")))) {
      const candidate = `${s}.${name}`;
      if (messages.has(candidate) || enums.has(candidate)) return candidate;
      if (s === "") return name;
    }
  };
  const fixField = (field: FieldDescriptorProto, scope: string) => {
    if (field.typeName !== "") {
      field.typeName = resolve(field.typeName, scope);
      if (!isFieldSet(field, FieldDescriptorProtoSchema.field.type)) {
        if (messages.has(field.typeName)) field.type = FieldDescriptorProto_Type.MESSAGE;
        else if (enums.has(field.typeName)) field.type = FieldDescriptorProto_Type.ENUM;
      }
    }
    if (field.extendee !== "") field.extendee = resolve(field.extendee, scope);
  };
  const fixMessage = (message: DescriptorProto, parent: string) => {
    const scope = `${parent}.${message.name}`;
    for (const f of message.field) fixField(f, scope);
    for (const f of message.extension) fixField(f, scope);
    for (const nested of message.nestedType) fixMessage(nested, scope);
  };
  return files.map((original) => {
    if (!hasRelativeNames(original)) return original;
    const file = clone(FileDescriptorProtoSchema, original);
    const scope = file.package === "" ? "" : `.${file.package}`;
    for (const m of file.messageType) fixMessage(m, scope);
    for (const f of file.extension) fixField(f, scope);
    for (const service of file.service) {
      for (const method of service.method) {
        method.inputType = resolve(method.inputType, scope);
        method.outputType = resolve(method.outputType, scope);
      }
    }
    return file;
  });
}

function collectTypes(
  message: DescriptorProto,
  parent: string,
  messages: Set<string>,
  enums: Set<string>,
): void {
  const name = `${parent}.${message.name}`;
  messages.add(name);
  for (const e of message.enumType) enums.add(`${name}.${e.name}`);
  for (const nested of message.nestedType) collectTypes(nested, name, messages, enums);
}

function hasRelativeNames(file: FileDescriptorProto): boolean {
  const relative = (name: string) => name !== "" && !name.startsWith(".");
  const inField = (f: FieldDescriptorProto) => relative(f.typeName) || relative(f.extendee);
  const inMessage = (m: DescriptorProto): boolean =>
    m.field.some(inField) || m.extension.some(inField) || m.nestedType.some(inMessage);
  return (
    file.messageType.some(inMessage) ||
    file.extension.some(inField) ||
    file.service.some((s) => s.method.some((m) => relative(m.inputType) || relative(m.outputType)))
  );
}
