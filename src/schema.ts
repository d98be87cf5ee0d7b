// The contract's compiled schema, as reflection serves it and benchmark disclosures hash it.
import { create, type DescFile, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { file_envelope_v1_admission_service } from "./gen/envelope/v1/admission_service_pb.js";
import { file_envelope_v1_benchmark_disclosure } from "./gen/envelope/v1/benchmark_disclosure_pb.js";
import { file_envelope_v1_decision_record } from "./gen/envelope/v1/decision_record_pb.js";
import { file_envelope_v1_error } from "./gen/envelope/v1/error_pb.js";
import { file_envelope_v1_runtime_response } from "./gen/envelope/v1/runtime_response_pb.js";
import { file_envelope_v1_trace_event } from "./gen/envelope/v1/trace_event_pb.js";

/** Every artifact of the contract, including those no RPC uses yet (the service's file imports the rest). */
export const contractFiles: readonly DescFile[] = Object.freeze([
  file_envelope_v1_admission_service,
  file_envelope_v1_error,
  file_envelope_v1_runtime_response,
  file_envelope_v1_trace_event,
  file_envelope_v1_benchmark_disclosure,
  file_envelope_v1_decision_record,
]);

/** The files and everything they import as a FileDescriptorSet, dependencies first. */
export function descriptorSet(files: readonly DescFile[] = contractFiles): Uint8Array {
  const ordered: DescFile[] = [];
  const visit = (file: DescFile) => {
    if (ordered.includes(file)) return;
    for (const dep of file.dependencies) visit(dep);
    ordered.push(file);
  };
  for (const f of files) visit(f);
  return toBinary(FileDescriptorSetSchema, create(FileDescriptorSetSchema, { file: ordered.map((f) => f.proto) }));
}
