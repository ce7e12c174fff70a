"""The attribute keys the OpenTelemetry semantic conventions define, read from the Python package
`opentelemetry-semantic-conventions` (installed with `pip install --target ROOT`), as JSON:

    {"version": "...", "defined": [key, ...], "templates": [prefix, ...],
     "deprecated": {key: "why, and what replaces it"}}

Usage: semconv_keys.py ROOT VERSION. The modules' source is parsed (ast), never imported, so the
package's dependencies need not be installed, and nothing else on the machine's path is read: the
keys come from ROOT alone, whose version must be VERSION.

Where the package says what:
- `NAME: Final = "key"` defines an attribute; a `_TEMPLATE` name defines a prefix (`key.<suffix>`).
- The string right after it is its docstring. `Deprecated: <why>` marks the attribute deprecated.
  `Deprecated in favor of stable ...` marks only the incubating module's alias of a stable
  attribute (the key itself is stable), so it is not a deprecation of the key.
- `@deprecated("The attribute <key> is deprecated - <why>")` on a value enum marks it too.
"""

import ast
import json
import pathlib
import re
import sys

MODULE_DIRS = ("attributes", "_incubating/attributes")
ATTRIBUTE_DEPRECATED = re.compile(r"The attribute (\S+) is deprecated(?: - (.*))?", re.S)


def constants(tree):
    """(name, key, docstring or "") of each module-level string constant."""
    body = tree.body
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        else:
            continue
        if not (isinstance(target, ast.Name) and target.id.isupper()):
            continue
        if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
            continue
        doc = ""
        following = body[i + 1] if i + 1 < len(body) else None
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            doc = following.value.value.strip()
        yield target.id, value.value, doc


def decorated_deprecations(tree):
    """(key, why) of each `@deprecated("The attribute <key> is deprecated - <why>")`."""
    for node in ast.walk(tree):
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            continue
        for decorator in node.decorator_list:
            if not (isinstance(decorator, ast.Call) and decorator.args):
                continue
            func = decorator.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            message = decorator.args[0]
            if name != "deprecated" or not isinstance(message, ast.Constant):
                continue
            found = ATTRIBUTE_DEPRECATED.fullmatch(str(message.value).strip())
            if found:
                yield found.group(1), (found.group(2) or "deprecated").strip()


def main():
    root, version = pathlib.Path(sys.argv[1]), sys.argv[2]
    package = root / "opentelemetry" / "semconv"
    version_file = package / "version" / "__init__.py"
    found = re.search(r'__version__\s*=\s*"([^"]+)"', version_file.read_text())
    if not found or found.group(1) != version:
        sys.exit(f"{version_file}: version {found and found.group(1)!r}, expected {version!r}")

    defined, templates, deprecated, stable = set(), set(), {}, set()
    aliases = {}  # key -> the docstring of an incubating alias of a stable attribute
    files = 0
    for sub in MODULE_DIRS:
        for path in sorted((package / sub).glob("*.py")):
            files += 1
            tree = ast.parse(path.read_text(), str(path))
            for name, key, doc in constants(tree):
                defined.add(key)
                # `URL_TEMPLATE = "url.template"` is an attribute of its own, not a prefix.
                if name.endswith("_TEMPLATE") and not key.endswith(".template"):
                    templates.add(key)
                if doc.startswith("Deprecated in favor of stable"):
                    aliases[key] = doc
                elif doc.startswith("Deprecated"):
                    deprecated[key] = doc.split(":", 1)[-1].strip() or doc
                elif sub == "attributes":
                    stable.add(key)
            for key, why in decorated_deprecations(tree):
                deprecated.setdefault(key, why)
    # An alias whose stable attribute is missing would be a deprecation without a replacement.
    for key, doc in aliases.items():
        if key not in stable:
            deprecated.setdefault(key, doc)
    if files == 0 or not defined:
        sys.exit(f"{package}: no attribute modules found")
    json.dump(
        {
            "version": version,
            "defined": sorted(defined),
            "templates": sorted(templates),
            "deprecated": dict(sorted(deprecated.items())),
        },
        sys.stdout,
        indent=1,
    )


if __name__ == "__main__":
    main()
