#!/usr/bin/python3
"""Polyglot gRPC client for envelope.v1.AdmissionService (a real non-Node peer).

Calls Admit or GetCapabilities with Python's gRPC C-core (Debian's python3-grpcio) and prints
exactly one JSON object on stdout:

    {"ok": true, "response": {...}}
    {"ok": false, "code": "INVALID_ARGUMENT", "message": "...", "errorEnvelope": {...} | null}

Why a descriptor set instead of generated stubs: Debian's grpc_tools protoc (3.5.1) is too old for
these protos (proto3 `optional`, protovalidate's validate.proto), and checking generated *_pb2 code
into the repo would be one more artifact to keep in sync with proto/. Instead the schema is loaded at
run time from the output of `npx buf build -o FILE.binpb` (a Buf image, wire-compatible with
google.protobuf.FileDescriptorSet), message classes are built from it with message_factory, and
methods are called with `channel.unary_unary`. The client therefore always speaks exactly the schema
the server was built from.

google.rpc.Status (the payload of the `grpc-status-details-bin` trailer) is not part of the image and
the googleapis-common-protos package is not needed: its descriptor is constructed in code below.

Run with Debian's interpreter (/usr/bin/python3), which is where python3-grpcio is installed; see
scripts/install-test-deps.sh.
"""

import argparse
import json
import sys

try:
    import grpc
    from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, json_format, message_factory
except ImportError as exc:  # reported after argument parsing, so --help works on any interpreter
    _IMPORT_ERROR = exc
else:
    _IMPORT_ERROR = None

SERVICE = "envelope.v1.AdmissionService"
ERROR_ENVELOPE = "envelope.v1.ErrorEnvelope"
ERROR_ENVELOPE_TYPE_URL = "type.googleapis.com/" + ERROR_ENVELOPE
STATUS_DETAILS_KEY = "grpc-status-details-bin"
STATUS_FILE = "google/rpc/status.proto"
DEFAULT_TIMEOUT_SECONDS = 10.0


class UsageError(Exception):
    """A problem with the arguments or input files: reported on stderr, exit code 2."""


def _message_class(pool, full_name):
    """The message class of full_name in pool, across protobuf Python versions.

    message_factory.GetMessageClass only exists from protobuf 4.22 (Debian 12 ships 4.21.12, where
    MessageFactory(pool).GetPrototype is the way; GetPrototype is deprecated/removed in newer ones).
    """
    descriptor = pool.FindMessageTypeByName(full_name)
    get_message_class = getattr(message_factory, "GetMessageClass", None)
    if get_message_class is not None:
        return get_message_class(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def _status_file_proto():
    """google/rpc/status.proto, built in code: Status {int32 code=1; string message=2; repeated Any details=3}."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name=STATUS_FILE,
        package="google.rpc",
        syntax="proto3",
        dependency=["google/protobuf/any.proto"],
    )
    status = fdp.message_type.add(name="Status")
    F = descriptor_pb2.FieldDescriptorProto
    status.field.add(name="code", number=1, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL, json_name="code")
    status.field.add(name="message", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="message")
    status.field.add(
        name="details",
        number=3,
        type=F.TYPE_MESSAGE,
        label=F.LABEL_REPEATED,
        type_name=".google.protobuf.Any",
        json_name="details",
    )
    return fdp


def load_pool(path):
    """A fresh DescriptorPool holding every file of the descriptor set at path, plus google.rpc.Status.

    A fresh pool (not the default one) avoids conflicts between the image's copies of the well-known
    types and those the protobuf runtime already registered.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UsageError("cannot read descriptor set %s: %s" % (path, exc.strerror or exc))
    try:
        fds = descriptor_pb2.FileDescriptorSet.FromString(data)
    except Exception as exc:  # DecodeError; message differs between implementations
        raise UsageError("%s is not a FileDescriptorSet / Buf image: %s" % (path, exc))
    files = {f.name: f for f in fds.file}
    if "google/protobuf/any.proto" not in files:
        files["google/protobuf/any.proto"] = descriptor_pb2.FileDescriptorProto.FromString(
            any_pb2.DESCRIPTOR.serialized_pb
        )
    if STATUS_FILE not in files:
        files[STATUS_FILE] = _status_file_proto()

    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name, stack=()):
        # Dependencies first: the pool builds each file as it is added.
        if name in added:
            return
        if name in stack:
            raise UsageError("import cycle in descriptor set at %s" % name)
        if name not in files:
            raise UsageError("descriptor set %s lacks %s (build it with `npx buf build -o FILE.binpb`, imports included)" % (path, name))
        for dep in files[name].dependency:
            add(dep, stack + (name,))
        pool.Add(files[name])
        added.add(name)

    try:
        for name in files:
            add(name)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError("cannot load descriptor set %s: %s" % (path, exc))
    return pool


def to_dict(message):
    # Same JSON as json_format.MessageToJson(message, preserving_proto_field_name=False), as an object.
    return json_format.MessageToDict(message, preserving_proto_field_name=False)


def decode_error_envelope(pool, trailing_metadata):
    """The envelope.v1.ErrorEnvelope packed in grpc-status-details-bin as JSON (a dict), or None."""
    raw = None
    for key, value in trailing_metadata or ():
        if key == STATUS_DETAILS_KEY:
            raw = value
    if raw is None:
        return None
    if isinstance(raw, str):  # -bin keys arrive as bytes; be lenient anyway
        raw = raw.encode("latin-1")
    try:
        status = _message_class(pool, "google.rpc.Status").FromString(raw)
        envelope_class = _message_class(pool, ERROR_ENVELOPE)
        for detail in status.details:
            if detail.type_url == ERROR_ENVELOPE_TYPE_URL:
                return to_dict(envelope_class.FromString(detail.value))
    except Exception as exc:
        sys.stderr.write("admit_client: cannot decode %s: %s\n" % (STATUS_DETAILS_KEY, exc))
    return None


def build_request(pool, method, request_path):
    request_class = _message_class(pool, method.input_type.full_name)
    request = request_class()
    if method.name != "Admit":
        return request  # GetCapabilities takes an empty request
    try:
        with open(request_path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise UsageError("cannot read request %s: %s" % (request_path, exc.strerror or exc))
    try:
        json_format.Parse(text, request, descriptor_pool=pool)
    except json_format.ParseError as exc:
        raise UsageError("request %s is not a valid %s in proto3 JSON: %s" % (request_path, method.input_type.full_name, exc))
    return request


def call(target, pool, method, request, timeout):
    response_class = _message_class(pool, method.output_type.full_name)
    path = "/%s/%s" % (method.containing_service.full_name, method.name)
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        try:
            response = stub(request, timeout=timeout)
        except grpc.RpcError as err:
            # The raised error is also a grpc.Call: code, details and trailing metadata are on it.
            code = err.code()
            return {
                "ok": False,
                "code": code.name if code is not None else "UNKNOWN",
                "message": err.details() or "",
                "errorEnvelope": decode_error_envelope(pool, err.trailing_metadata()),
            }
    return {"ok": True, "response": to_dict(response)}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Call envelope.v1.AdmissionService over gRPC (insecure) using a descriptor set loaded "
        "at run time, and print one JSON object with the outcome.",
        epilog="Example: /usr/bin/python3 test/polyglot/admit_client.py --target 127.0.0.1:50051 "
        "--descriptor-set /tmp/envelope.binpb --request test/fixtures/runtime-request.json",
    )
    parser.add_argument("--target", required=True, help="host:port of the server, e.g. 127.0.0.1:50051")
    parser.add_argument(
        "--descriptor-set", required=True, metavar="PATH.binpb", help="output of `npx buf build -o PATH.binpb`"
    )
    parser.add_argument(
        "--request", metavar="PATH.json", help="RuntimeRequest in proto3 JSON (required for Admit, ignored otherwise)"
    )
    parser.add_argument("--method", choices=("Admit", "GetCapabilities"), default="Admit")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, help="deadline in seconds (default %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.method == "Admit" and not args.request:
        parser.error("--request is required for --method Admit")  # exits 2
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if _IMPORT_ERROR is not None:
        sys.stderr.write(
            "admit_client: %s\nadmit_client: run with /usr/bin/python3 after scripts/install-test-deps.sh "
            "(Debian python3-grpcio and python3-protobuf)\n" % _IMPORT_ERROR
        )
        return 2

    try:
        pool = load_pool(args.descriptor_set)
        try:
            service = pool.FindServiceByName(SERVICE)
        except KeyError:
            raise UsageError("descriptor set %s has no service %s" % (args.descriptor_set, SERVICE))
        method = service.methods_by_name.get(args.method)
        if method is None:
            raise UsageError("%s has no method %s" % (SERVICE, args.method))
        request = build_request(pool, method, args.request)
    except UsageError as exc:
        sys.stderr.write("admit_client: %s\n" % exc)
        return 2

    result = call(args.target, pool, method, request, args.timeout)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
