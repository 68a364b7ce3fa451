"""The package's layer order (DESIGN.md §3): every `talkinghead` import, at the top of a module or inside a
function, goes to the importer's own wing or to a lower layer. The README's Layout section and
docs/architecture.md show this table."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "talkinghead"

# lowest first; a wing is a subpackage or a top-level module (without .py)
LAYERS: list[tuple[str, ...]] = [
    ("__init__", "errors", "console", "config", "bundled"),
    ("media",),
    ("landmarks",),
    ("nn", "backbones"),
    ("metrics", "data"),
    ("persons",),
    ("train",),
    ("inference",),
    ("speech",),
    ("live", "evaluation"),
    ("app",),
    ("commands",),
    ("cli",),
    ("__main__",),
]
FACE = LAYERS[0]
LAYER_OF = {wing: i for i, layer in enumerate(LAYERS) for wing in layer}


def wing_of(module: str) -> str:
    """'talkinghead.media.video' -> 'media'; 'talkinghead' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module) of every talkinghead import in the tree; `from talkinghead import x` counts
    as importing talkinghead.x."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "talkinghead"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "talkinghead":
                continue
            if target == "talkinghead":
                out += [(node.lineno, f"talkinghead.{a.name}") if f"talkinghead.{a.name}" != "talkinghead.__version__"
                        else (node.lineno, "talkinghead") for a in node.names]
            else:
                out.append((node.lineno, target))
    return out


def upward_imports(root: Path = PACKAGE) -> list[str]:
    """Every import that breaks the layer order, as 'file:line: importer -> imported'."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path) if root == PACKAGE else "talkinghead." + ".".join(
            path.relative_to(root).with_suffix("").parts)
        src = wing_of(module)
        if src not in LAYER_OF:
            bad.append(f"{path}: wing {src!r} is in no layer")
            continue
        tree = ast.parse(path.read_text(), str(path))
        for line, target in imported_modules(tree, module, path.name == "__init__.py"):
            dst = wing_of(target)
            if dst == src:
                continue
            if dst not in LAYER_OF:
                bad.append(f"{path}:{line}: {module} -> {target} (wing {dst!r} is in no layer)")
            elif LAYER_OF[dst] >= LAYER_OF[src] and not (src in FACE and dst in FACE):
                bad.append(f"{path}:{line}: {module} -> {target}")
    return bad


def test_every_import_goes_down():
    assert upward_imports() == []


def test_every_wing_is_in_a_layer():
    wings = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    wings |= {p.stem for p in PACKAGE.glob("*.py")}
    assert wings <= set(LAYER_OF), sorted(wings - set(LAYER_OF))


@pytest.mark.parametrize("importer, line, why", [
    ("media/video.py", "from talkinghead.landmarks.detect import Face", "media below landmarks"),
    ("nn/layers.py", "from talkinghead.persons import checkpoint", "nn below persons"),
    ("train/meta.py", "    from talkinghead.inference.animator import Animator", "training below inference"),
    ("persons/avatar.py", "from . import __nothing__\nfrom ..train import finetune", "a relative import upwards"),
])
def test_an_upward_import_fails(tmp_path, importer, line, why):
    (tmp_path / importer).parent.mkdir(parents=True)
    (tmp_path / importer).parent.joinpath("__init__.py").write_text("")
    body = line if line.startswith(" ") is False else "def f():\n" + line
    (tmp_path / importer).write_text(body + "\n")
    bad = upward_imports(tmp_path)
    assert len(bad) == 1 and importer in bad[0], (why, bad)


def test_a_downward_import_passes(tmp_path):
    (tmp_path / "inference").mkdir()
    (tmp_path / "inference" / "animator.py").write_text(
        "from talkinghead.persons.avatar import Avatar\nfrom talkinghead import bundled\nfrom . import pipeline\n")
    assert upward_imports(tmp_path) == []


def _readme_layers() -> list[tuple[str, ...]]:
    """The Layout table of the README as LAYERS: [(wing, ...)] lowest first (rows of one layer merged)."""
    text = (PACKAGE.parent / "README.md").read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows: dict[int, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            names = [w.strip(" `/") for w in cells[1].split(",")]
            rows.setdefault(int(cells[0]), []).extend(names)
    return [tuple(rows[k]) for k in sorted(rows)]


def test_the_readme_layout_is_the_layer_table():
    assert [set(layer) for layer in _readme_layers()] == [set(layer) for layer in LAYERS]


def test_the_readme_opens_with_the_two_commands_and_stays_short():
    lines = (PACKAGE.parent / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    opening = "\n".join(lines[:6])
    assert "```bash\nmake demo" in opening and "\nmake test" in opening
