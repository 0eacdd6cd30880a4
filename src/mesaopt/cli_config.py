"""``mesaopt config NAME``: every field of an experiment's config as rows (type, default, description) or YAML."""

from __future__ import annotations


def type_name(ann) -> str:
    """A short readable name of a field annotation: int, float | None, Literal['adam', 'sgd'], ..."""
    if isinstance(ann, type) and not getattr(ann, "__args__", None):
        return ann.__name__
    return str(ann).replace("typing.", "").replace("NoneType", "None")


def config_rows(model, prefix: str = "") -> list[tuple[str, str, object, str]]:
    """(dotted name, type, value, description) of every field of a config, nested configs flattened."""
    from pydantic import BaseModel

    rows = []
    dumped = model.model_dump(mode="json")
    for fname, f in type(model).model_fields.items():
        v = getattr(model, fname)
        name = f"{prefix}{fname}"
        if isinstance(v, BaseModel):
            rows.extend(config_rows(v, f"{name}."))
        else:
            rows.append((name, type_name(f.annotation), dumped[fname], " ".join((f.description or "").split())))
    return rows


def config_yaml(model, indent: int = 0) -> list[str]:
    """YAML lines of a config with each field's description as a comment above it (loadable with -c)."""
    import yaml
    from pydantic import BaseModel

    pad, lines = " " * indent, []
    dumped = model.model_dump(mode="json")
    for fname, f in type(model).model_fields.items():
        v = getattr(model, fname)
        desc = " ".join((f.description or "").split())
        head = f"{pad}# {desc}" if desc else None
        if isinstance(v, BaseModel):
            lines.extend([*([head] if head else []), f"{pad}{fname}:", *config_yaml(v, indent + 2)])
            continue
        val = dumped[fname]
        if isinstance(val, list) and all(not isinstance(x, dict | list) for x in val):
            text = f"{fname}: " + yaml.safe_dump(val, default_flow_style=True, width=10**6).strip()
        else:
            text = yaml.safe_dump({fname: val}, default_flow_style=False, sort_keys=False).rstrip("\n")
        lines.extend([*([f"{head}  ({type_name(f.annotation)})"] if head else []),
                      *(pad + ln for ln in text.splitlines())])
    return lines
