// gRPC server reflection (grpc.reflection.v1, and v1alpha which is wire-identical), answered from the
// descriptors compiled into the generated code, so `buf curl`, grpcurl and similar tools work without
// local .proto files. (@grpc/reflection rebuilds descriptors through protobufjs and drops their
// dependency lists, which leaves clients unable to resolve any message type.)
import {
  create,
  type DescFile,
  type DescService,
  fromBinary,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import {
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from "../gen/grpc/reflection/v1/reflection_pb.js";

const grpcNotFound = 5;
const grpcUnimplemented = 12;

interface Index {
  readonly services: readonly string[];
  readonly fileByName: ReadonlyMap<string, DescFile>;
  readonly fileBySymbol: ReadonlyMap<string, DescFile>;
  /** Extension numbers by extended message, and the file declaring each. */
  readonly extensions: ReadonlyMap<string, ReadonlyMap<number, DescFile>>;
  readonly encoded: ReadonlyMap<DescFile, Uint8Array>;
}

function buildIndex(services: readonly DescService[], files: readonly DescFile[]): Index {
  const fileByName = new Map<string, DescFile>();
  const fileBySymbol = new Map<string, DescFile>();
  const extensions = new Map<string, Map<number, DescFile>>();
  const encoded = new Map<DescFile, Uint8Array>();
  const visit = (file: DescFile) => {
    if (fileByName.has(file.proto.name)) return;
    fileByName.set(file.proto.name, file);
    encoded.set(file, toBinary(FileDescriptorProtoSchema, file.proto));
    for (const desc of nestedTypes(file)) {
      fileBySymbol.set(desc.typeName, file);
      if (desc.kind === "service") for (const m of desc.methods) fileBySymbol.set(`${desc.typeName}.${m.name}`, file);
      if (desc.kind === "extension") {
        const byNumber = extensions.get(desc.extendee.typeName) ?? new Map<number, DescFile>();
        byNumber.set(desc.number, file);
        extensions.set(desc.extendee.typeName, byNumber);
      }
    }
    for (const dep of file.dependencies) visit(dep);
  };
  for (const s of services) visit(s.file);
  for (const f of files) visit(f);
  return { services: services.map((s) => s.typeName), fileByName, fileBySymbol, extensions, encoded };
}

/** The file and everything it imports, the file first, as serialized FileDescriptorProtos. */
function withDependencies(index: Index, file: DescFile): Uint8Array[] {
  const seen = new Set<DescFile>();
  const out: Uint8Array[] = [];
  const visit = (f: DescFile) => {
    if (seen.has(f)) return;
    seen.add(f);
    out.push(index.encoded.get(f) ?? toBinary(FileDescriptorProtoSchema, f.proto));
    for (const dep of f.dependencies) visit(dep);
  };
  visit(file);
  return out;
}

function answer(index: Index, request: ServerReflectionRequest): ServerReflectionResponse {
  const respond = (
    messageResponse: NonNullable<MessageInitShape<typeof ServerReflectionResponseSchema>["messageResponse"]>,
  ) => create(ServerReflectionResponseSchema, { validHost: request.host, originalRequest: request, messageResponse });
  const notFound = (what: string) =>
    respond({ case: "errorResponse", value: { errorCode: grpcNotFound, errorMessage: `${what} not found` } });
  const files = (file: DescFile | undefined, what: string) =>
    file === undefined
      ? notFound(what)
      : respond({ case: "fileDescriptorResponse", value: { fileDescriptorProto: withDependencies(index, file) } });

  const r = request.messageRequest;
  switch (r.case) {
    case "listServices":
      return respond({ case: "listServicesResponse", value: { service: index.services.map((name) => ({ name })) } });
    case "fileByFilename":
      return files(index.fileByName.get(r.value), `file ${r.value}`);
    case "fileContainingSymbol":
      return files(index.fileBySymbol.get(r.value.replace(/^\./, "")), `symbol ${r.value}`);
    case "fileContainingExtension":
      return files(
        index.extensions.get(r.value.containingType)?.get(r.value.extensionNumber),
        `extension ${r.value.extensionNumber} of ${r.value.containingType}`,
      );
    case "allExtensionNumbersOfType": {
      if (!index.fileBySymbol.has(r.value)) return notFound(`type ${r.value}`);
      const numbers = [...(index.extensions.get(r.value)?.keys() ?? [])];
      return respond({
        case: "allExtensionNumbersResponse",
        value: { baseTypeName: r.value, extensionNumber: numbers },
      });
    }
    default:
      return respond({
        case: "errorResponse",
        value: { errorCode: grpcUnimplemented, errorMessage: "unsupported request" },
      });
  }
}

const passThrough = (b: Buffer) => b;

/**
 * Registers reflection describing `services` on a grpc-js server, and `files` beside them: files no
 * service imports but clients need, such as the ErrorEnvelope carried in error details.
 */
export function addReflection(server: grpc.Server, services: readonly DescService[], files: readonly DescFile[]): void {
  const index = buildIndex(services, files);
  const handler: grpc.handleBidiStreamingCall<Buffer, Buffer> = (call) => {
    call.on("data", (bytes: Buffer) => {
      let request: ServerReflectionRequest;
      try {
        request = fromBinary(ServerReflectionRequestSchema, bytes);
      } catch {
        call.destroy(Object.assign(new Error("malformed reflection request"), { code: 3 }));
        return;
      }
      call.write(Buffer.from(toBinary(ServerReflectionResponseSchema, answer(index, request))));
    });
    call.on("end", () => call.end());
  };
  for (const pkg of ["grpc.reflection.v1", "grpc.reflection.v1alpha"]) {
    server.addService(
      {
        ServerReflectionInfo: {
          path: `/${pkg}.ServerReflection/ServerReflectionInfo`,
          requestStream: true,
          responseStream: true,
          requestSerialize: passThrough,
          requestDeserialize: passThrough,
          responseSerialize: passThrough,
          responseDeserialize: passThrough,
        },
      },
      { ServerReflectionInfo: handler },
    );
  }
}
