"""The base of every API model and the pieces all three kinds share (metadata, references, conditions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema as cs

from .rules import VALIDATIONS, Rule, immutable

GROUP = "mta-operator.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "mta"


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields dropped (the API server prunes them)."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True, extra="ignore")

    # Object-level rules of this model: CEL in the schema, the Python mirror run after validation.
    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Any:
        for rule in type(self).rules:
            rule.verify(self)
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: cs.CoreSchema, handler: GetJsonSchemaHandler,
    ) -> JsonSchemaValue:
        result = super().__get_pydantic_json_schema__(schema, handler)
        if cls.rules:
            handler.resolve_ref_schema(result)[VALIDATIONS] = [rule.to_schema() for rule in cls.rules]
        return result


class ObjectMeta(ApiModel):
    """The parts of metadata the operator and the relay read."""

    name: str = Field(description="Name of the object, unique in its namespace.")
    namespace: str | None = Field(None, description="Namespace of the object.")
    uid: str | None = Field(None, description="UID assigned by the API server.")
    generation: int | None = Field(None, description="Generation of the spec, bumped on every spec change.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")


class ClusterRef(ApiModel):
    """A Cluster in the same namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Cluster in this namespace.")


ImmutableClusterRef = Annotated[
    ClusterRef,
    immutable("clusterRef"),
    Field(description="The Cluster (in this namespace) this object belongs to. Immutable: to move it, create "
                      "a new object."),
]


class SecretKeyRef(ApiModel):
    """A key of a Secret in the same namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret in this namespace.")
    key: str = Field("password", min_length=1, max_length=253, description="Key in the Secret's data.")


class SecretRef(ApiModel):
    """A Secret in the same namespace."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret in this namespace.")


class ConditionStatus(StrEnum):
    """Status of a condition."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A condition in the shape of metav1.Condition, readable by kstatus (Argo CD, Flux)."""

    type: str = Field(min_length=1, max_length=316, pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$",
                      description="Type of the condition in CamelCase, such as Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation of the object this condition was computed from.")
    last_transition_time: datetime = Field(
        description="When status last changed (not when the condition was last written).")
    reason: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                        description="Machine-readable reason in CamelCase, such as Reconciled.")
    message: str = Field("", max_length=32768, description="Human-readable details; may be empty.")


Conditions = Annotated[
    list[Condition],
    Field(default_factory=list, max_length=16, description="Current state, one entry per condition type.",
          json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}),
]
ObservedGeneration = Annotated[
    int | None,
    Field(None, ge=0, description="metadata.generation of the spec the status describes."),
]


def section(model: type[ApiModel], description: str) -> Any:
    """A nested object always present: the schema default {} makes the API server fill in its defaults."""
    return Field(default_factory=model, description=description, json_schema_extra={"default": {}})


@dataclass(frozen=True)
class PrinterColumn:
    """One additionalPrinterColumns entry."""

    name: str
    json_path: str
    description: str
    type: str = "string"
    priority: int = 0

    def to_crd(self) -> dict[str, Any]:
        column: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path,
                                  "description": self.description}
        if self.priority:
            column["priority"] = self.priority
        return column


@dataclass(frozen=True)
class CrdInfo:
    """How a kind is served: names, printer columns, root-level rules and optional scale subresource."""

    kind: str
    plural: str
    short_name: str
    description: str
    columns: tuple[PrinterColumn, ...]
    root_rules: tuple[Rule, ...] = ()
    selectable_fields: tuple[str, ...] = ()
    scale: dict[str, str] = field(default_factory=dict)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"


def ready_columns() -> tuple[PrinterColumn, ...]:
    """Ready from the Ready condition, its message at priority 1 (kubectl get -o wide), Age."""
    ready = '.status.conditions[?(@.type=="Ready")]'
    return (
        PrinterColumn("Ready", f"{ready}.status", "Ready condition"),
        PrinterColumn("Age", ".metadata.creationTimestamp", "Time since creation", type="date"),
        PrinterColumn("Message", f"{ready}.message", "Message of the Ready condition", priority=1),
    )


class Resource(ApiModel):
    """A custom resource as the API server returns it."""

    crd: ClassVar[CrdInfo]

    api_version: str = Field(API_VERSION, description="mta-operator.io/v1alpha1")
    kind: str = Field(description="Kind of the object.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")

    def condition(self, type_: str) -> Condition | None:
        """The condition of this type in status, if any."""
        status = getattr(self, "status", None)
        return next((c for c in status.conditions if c.type == type_), None) if status else None
