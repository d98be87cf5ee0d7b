import type { Path } from "@bufbuild/protobuf/reflect";

/**
 * Formats a protobuf path in the contract's JSON vocabulary: camelCase field names joined by dots,
 * list indexes and map keys in brackets, e.g. `permissions.scopes[2]` or `budget.resources["gpu"]`.
 */
export function jsonFieldPath(path: Path): string {
  let out = "";
  for (const item of path) {
    switch (item.kind) {
      case "field":
        out += out === "" ? item.jsonName : `.${item.jsonName}`;
        break;
      case "oneof":
        out += out === "" ? item.name : `.${item.name}`;
        break;
      case "extension":
        out += `[${item.typeName}]`;
        break;
      case "list_sub":
        out += `[${item.index}]`;
        break;
      case "map_sub":
        out += `[${JSON.stringify(String(item.key))}]`;
        break;
    }
  }
  return out;
}
