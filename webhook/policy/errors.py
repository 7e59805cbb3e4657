"""Field paths and field errors, formatted the way the API server reports them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Path:
    """An immutable field path such as ``spec.ingress[0].from[1].ipBlock.cidr``."""

    text: str = ""

    def child(self, name: str) -> "Path":
        return Path(f"{self.text}.{name}" if self.text else name)

    def index(self, i: int) -> "Path":
        return Path(f"{self.text}[{i}]")

    def __str__(self) -> str:
        return self.text


ROOT = Path()
SPEC = Path("spec")


@dataclass(frozen=True)
class FieldError:
    """One reason the API server would refuse the object.

    kind is the API server's wording: "Required value", "Invalid value",
    "Unsupported value", "Forbidden", "Unknown field", "Too many".
    """

    path: Path
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}: {self.detail}"
