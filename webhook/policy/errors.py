"""Field paths and field errors, formatted the way the API server reports them."""
from __future__ import annotations

from dataclasses import dataclass


class Path:
    """An immutable field path such as ``spec.ingress[0].from[1].ipBlock.cidr``.

    A plain slotted class rather than a frozen dataclass: the parser makes ~17 of these
    per policy on the admission path, and a frozen dataclass's __init__ costs twice as much.
    """

    __slots__ = ("text",)

    def __init__(self, text: str = "") -> None:
        self.text = text

    def child(self, name: str) -> "Path":
        return Path(f"{self.text}.{name}" if self.text else name)

    def index(self, i: int) -> "Path":
        return Path(f"{self.text}[{i}]")

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Path({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Path) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


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
