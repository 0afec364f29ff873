"""Write what GitOps tools and readers learn about condition reasons from the registry (``reasons``), or
check that it matches: the Argo CD health check's terminal list (``gitops/argocd/health.lua``), the
``argocd-cm`` keys that carry that script, the terminal-reasons table of ``gitops/README.md`` and the
table of every reason in ``docs/operator.md``.

    python -m mta_operator.api.healthgen            # (re)generate, from the repository's root
    python -m mta_operator.api.healthgen --check    # exit 1 when a file drifted from the registry
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from .reasons import Reason, terminal

LUA = Path("gitops/argocd/health.lua")
ARGOCD_CM = Path("gitops/argocd/argocd-cm.yaml")
GITOPS_README = Path("gitops/README.md")
OPERATOR_DOCS = Path("docs/operator.md")
KINDS = ("Cluster", "SendingDomain", "SmtpCredential")

BEGIN = ("<!-- generated from operator/mta_operator/api/reasons.py by `python -m mta_operator.api.healthgen` "
         "-->")
END = "<!-- end of generated table -->"
LUA_BLOCK = re.compile(r"^local TERMINAL = \{\n.*?^\}\n", re.M | re.S)

ARGOCD_CM_HEAD = """\
# Argo CD health checks for mta-operator's kinds: merge these keys into argocd-cm (or the Argo CD Helm
# chart's configs.cm). Each value is gitops/argocd/health.lua verbatim (python -m mta_operator.api.healthgen).
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
"""


def lua_terminal_block() -> str:
    return "local TERMINAL = {\n" + "".join(f"  {r.value} = true,\n" for r in terminal()) + "}\n"


def lua(current: str) -> str:
    if not LUA_BLOCK.search(current):
        raise ValueError(f"{LUA}: no `local TERMINAL = {{ ... }}` block")
    return LUA_BLOCK.sub(lambda _: lua_terminal_block(), current, count=1)


def argocd_cm(script: str) -> str:
    body = "".join(f"    {line}\n" if line else "\n" for line in script.splitlines())
    return ARGOCD_CM_HEAD + "".join(
        f"  resource.customizations.health.mta-operator.io_{kind}: |\n{body}" for kind in KINDS)


def terminal_table() -> str:
    rows = [f"| `{r.value}` | {', '.join(r.kinds)} | {r.meaning} |" for r in terminal()]
    return "\n".join(["| reason | kind | meaning and what to do |", "|---|---|---|", *rows])


def reason_table() -> str:
    def where(r: Reason) -> str:
        return ", ".join(f"`{c}`" for c in r.conditions) or "Events only"

    rows = [f"| `{r.value}` | {where(r)} | {'yes' if r.terminal else ''} | {r.meaning} |" for r in Reason]
    head = ["| reason | condition (`Kind.Type`) | terminal | meaning |", "|---|---|---|---|"]
    return "\n".join([*head, *rows])


def between_markers(current: str, table: str, path: Path) -> str:
    start, end = current.find(BEGIN), current.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{path}: markers for the generated table are missing")
    return current[:start] + f"{BEGIN}\n{table}\n" + current[end:]


def expected(root: Path) -> dict[Path, str]:
    """Path → the text it should have (the Lua first: argocd-cm carries it)."""
    script = lua((root / LUA).read_text())
    builders: dict[Path, Callable[[str], str]] = {
        GITOPS_README: lambda text: between_markers(text, terminal_table(), GITOPS_README),
        OPERATOR_DOCS: lambda text: between_markers(text, reason_table(), OPERATOR_DOCS),
    }
    out = {LUA: script, ARGOCD_CM: argocd_cm(script)}
    for path, build in builders.items():
        out[path] = build((root / path).read_text())
    return out


def drift(root: Path) -> list[Path]:
    return [path for path, text in expected(root).items()
            if not (root / path).is_file() or (root / path).read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mta_operator.api.healthgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository's root (default: .)")
    args = parser.parse_args(argv)
    stale = drift(args.root)
    if args.check:
        for path in stale:
            print(f"{args.root / path}: differs from the reason registry; run python -m "
                  "mta_operator.api.healthgen", file=sys.stderr)
        return 1 if stale else 0
    for path, text in expected(args.root).items():
        if path in stale:
            (args.root / path).write_text(text)
            print(f"wrote {args.root / path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
