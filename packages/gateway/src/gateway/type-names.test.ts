import { create } from "@bufbuild/protobuf";
import { FieldDescriptorProto_Type, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { registryOf } from "./method-map.js";
import { qualifyTypeNames } from "./type-names.js";

describe("qualifyTypeNames", () => {
  // As @grpc/reflection answers: names relative to their scope.
  const relative = create(FileDescriptorProtoSchema, {
    name: "acme.proto",
    package: "acme.v1",
    syntax: "proto3",
    messageType: [
      {
        name: "Outer",
        field: [
          { name: "inner", number: 1, typeName: "Inner", type: FieldDescriptorProto_Type.MESSAGE },
          { name: "level", number: 2, typeName: "Level" },
          {
            name: "other",
            number: 3,
            typeName: "v1.Other",
            type: FieldDescriptorProto_Type.MESSAGE,
          },
        ],
        nestedType: [{ name: "Inner" }],
      },
      { name: "Other" },
    ],
    enumType: [{ name: "Level", value: [{ name: "LEVEL_UNSPECIFIED", number: 0 }] }],
    service: [{ name: "Svc", method: [{ name: "Get", inputType: "Outer", outputType: "Other" }] }],
  });

  it("resolves names innermost scope first, as protoc does, and fills in a missing type", () => {
    const [file] = qualifyTypeNames([relative]);
    const fields = file?.messageType[0]?.field ?? [];
    expect(fields.map((f) => f.typeName)).toEqual([
      ".acme.v1.Outer.Inner",
      ".acme.v1.Level",
      ".acme.v1.Other",
    ]);
    expect(fields[1]?.type).toBe(FieldDescriptorProto_Type.ENUM);
    expect(file?.service[0]?.method[0]).toMatchObject({
      inputType: ".acme.v1.Outer",
      outputType: ".acme.v1.Other",
    });
    // The input is left alone, and the result builds a registry.
    expect(relative.messageType[0]?.field[0]?.typeName).toBe("Inner");
    expect(
      registryOf(qualifyTypeNames([relative])).getService("acme.v1.Svc")?.methods[0]?.input
        .typeName,
    ).toBe("acme.v1.Outer");
  });

  it("returns files that are already qualified as they are", () => {
    const [qualified] = qualifyTypeNames([relative]);
    if (qualified === undefined) throw new Error("no file");
    expect(qualifyTypeNames([qualified])[0]).toBe(qualified);
  });
});
