"""Request bodies and job-id paths of the v1 API, and how a request becomes a
:class:`JobSpec`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.functional_validators import AfterValidator, BeforeValidator

from jobdeck.deck import Deck
from jobdeck.errors import JobdeckError
from jobdeck.model import JobSpec, parse_time

from .problems import Loc, Problem, error_problem

#: Job ids, queue names and label keys (DESIGN §2), anchored for pydantic.
NAME_REGEX = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
MAX_PRIORITY = 1_000_000_000
MAX_ATTEMPTS = 1000
#: About 31 years: longer delays and timeouts are mistakes.
MAX_SECONDS = 1_000_000_000
MAX_LABELS = 64
MAX_LABEL_VALUE = 1024
MAX_BATCH = 1000


def _check_time(text: str) -> str:
    try:
        parse_time(text)
    except (ValueError, OverflowError):
        raise ValueError("not an RFC 3339 timestamp within the years 0001 to 9999 UTC") from None
    return text


def _integral(value: Any) -> Any:
    # JSON Schema counts 1.0 as an integer: take it as 1 (strict validation still refuses
    # 1.5, "1" and true).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: Label keys: like names, without ``:``, since ``label=k:v`` filters split at the colon.
LABEL_KEY_REGEX = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
#: ``label=k:v`` of ``GET /v1/jobs``: a key a label can have, a colon, a value (maybe empty).
LABEL_FILTER_REGEX = LABEL_KEY_REGEX.removesuffix("$") + ":"

Name = Annotated[str, StringConstraints(pattern=NAME_REGEX)]
#: A job id in a path: malformed ones (too long, say) answer 422 before the store is asked.
JobIdPath = Annotated[str, Path(pattern=NAME_REGEX, description="the job's id")]
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_REGEX)]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE)]
Timestamp = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(_check_time),
    Field(json_schema_extra={"format": "date-time"}),
]
# JSON integers, 3 or 3.0. The constraints come before the validator, or the OpenAPI
# document leaves them out.
Priority = Annotated[
    int, Field(strict=True, ge=-MAX_PRIORITY, le=MAX_PRIORITY), BeforeValidator(_integral)
]
Attempts = Annotated[int, Field(strict=True, ge=1, le=MAX_ATTEMPTS), BeforeValidator(_integral)]


class JobRequest(BaseModel):
    """``POST /v1/jobs``: what to run. Unknown fields are rejected; ``run_at`` and ``delay``
    exclude each other."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "not": {
                "required": ["run_at", "delay"],
                "properties": {"run_at": {"type": "string"}, "delay": {"type": "number"}},
            }
        },
    )

    kind: Annotated[
        str,
        Field(min_length=1, max_length=128, description="a registered kind", examples=["steps"]),
    ]
    # Any: a params document that is no object answers as invalid params of the kind.
    params: Annotated[
        Any,
        Field(
            description="a JSON object, validated against the kind's schema",
            json_schema_extra={"anyOf": [{"type": "object"}, {"type": "null"}]},
        ),
    ] = None
    id: Annotated[Name | None, Field(description="the client's id (idempotent create)")] = None
    queue: Name | None = None
    priority: Priority = 0
    run_at: Annotated[
        Timestamp | None,
        Field(description="when to run, RFC 3339 within the years 0001 to 9999 UTC"),
    ] = None
    delay: Annotated[
        float | None,
        Field(strict=True, ge=0, le=MAX_SECONDS, allow_inf_nan=False, description="seconds"),
    ] = None
    max_attempts: Attempts | None = None
    timeout: Annotated[
        float | None,
        Field(strict=True, gt=0, le=MAX_SECONDS, allow_inf_nan=False, description="seconds"),
    ] = None
    labels: Annotated[
        dict[LabelKey, LabelValue],
        Field(max_length=MAX_LABELS, json_schema_extra={"additionalProperties": False}),
    ] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_start_time(self) -> JobRequest:
        if self.run_at is not None and self.delay is not None:
            raise ValueError("give run_at or delay, not both")
        return self

    def to_spec(self, deck: Deck, *, loc: Loc = ("body",), **members: Any) -> JobSpec:
        """The validated spec; raise a 4xx :class:`Problem` (``loc`` and ``members`` say
        where in the request this entry sits)."""
        try:
            return deck.build_spec(
                self.kind,
                self.params,
                id=self.id,
                queue=self.queue,
                priority=self.priority,
                max_attempts=self.max_attempts,
                timeout=self.timeout,
                labels=self.labels,
                run_at=parse_time(self.run_at) if self.run_at is not None else None,
                delay=self.delay,
            )
        except JobdeckError as exc:
            raise error_problem(exc, loc=loc, **members) from exc
        except ValueError as exc:
            raise Problem(
                422,
                str(exc),
                slug="validation-error",
                title="Request validation failed",
                errors=[{"loc": list(loc), "msg": str(exc), "type": "value_error"}],
                **members,
            ) from exc


class BatchRequest(BaseModel):
    """``POST /v1/jobs:batch``: up to 1000 jobs, stored all or none.

    Each entry has the shape of :class:`JobRequest`; entries are validated one by one so that
    a problem can name the bad entry's index.
    """

    model_config = ConfigDict(extra="forbid")

    jobs: Annotated[
        list[Any],
        Field(
            min_length=1,
            max_length=MAX_BATCH,
            json_schema_extra={"items": {"$ref": "#/components/schemas/JobRequest"}},
        ),
    ]
