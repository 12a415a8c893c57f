"""Reading job-type YAML files, with errors that name the file, the field and the line."""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from robotoff_batch.config.models import JOB_TYPE_PATTERN, JobConfig
from robotoff_batch.paths import JOB_CONFIGS_DIR

MAX_CONFIG_BYTES = 256 * 1024


@dataclass(frozen=True)
class Problem:
    field: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class JobConfigError(ValueError):
    """A job configuration file is invalid; ``str()`` lists every problem with its line."""

    def __init__(self, path: Path, problems: list[Problem]):
        self.path = path
        self.problems = problems
        lines = [f"invalid job configuration {path}:"] + [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


class JobConfigsError(ValueError):
    """Several files are invalid; ``str()`` lists each file's problems."""

    def __init__(self, errors: list[JobConfigError]):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


@dataclass(frozen=True)
class JobTypeConfig:
    """A validated config and where it came from."""

    job_type: str
    path: Path
    config: JobConfig


def _key_lines(node: yaml.Node, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """Map each key path of a YAML mapping to its 1-based line number."""
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = (*prefix, str(i))
            lines[key] = item.start_mark.line + 1
            lines.update(_key_lines(item, key))
    return lines


def field_path(loc: tuple[str, ...]) -> str:
    """``("fallbacks", "0", "location")`` -> ``fallbacks[0].location``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if part.isdigit() else (f".{part}" if text else part)
    return text


def known_fields(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    """The field names of the model found at ``loc`` inside ``model`` (list indices and
    dict keys skipped), for "did you mean"; [] where ``loc`` leads to no model."""
    if not loc:
        return list(model.model_fields)
    info = model.model_fields.get(loc[0])
    if info is None:
        return []
    rest = loc[1:]
    pending: list[object] = [info.annotation]
    while pending:
        annotation = pending.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            # a list item or a dict value: skip its index or key, then the model's own fields
            inner = rest[1:] if rest and rest[0] not in annotation.model_fields else rest
            return known_fields(annotation, inner)
        pending.extend(typing.get_args(annotation))
    return []


def _problems_from(error: ValidationError, lines: dict[tuple[str, ...], int]) -> list[Problem]:
    problems = []
    for err in error.errors():
        loc = tuple(str(part) for part in err["loc"])
        ctx = err.get("ctx") or {}
        if "field" in ctx:  # cross-field rule: name the field it is about (a dotted path)
            loc = (*loc, *str(ctx["field"]).split("."))
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field (not part of the job configuration; check its spelling)"
            close = difflib.get_close_matches(loc[-1], known_fields(JobConfig, loc[:-1]), n=1)
            if close:
                message += f"; did you mean {close[0]}?"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif "input" in err and err["type"] not in ("config_rule",):
            message = f"{message} (got {err['input']!r})"
        # Strip pydantic's "Value error, " prefix from custom validators.
        message = re.sub(r"^Value error, ", "", message)
        line = None
        for depth in range(len(loc), 0, -1):
            line = lines.get(loc[:depth])
            if line:
                break
        problems.append(Problem(field=field_path(loc), line=line, message=message))
    return problems


def load_job_config(path: Path) -> JobTypeConfig:
    """Read and validate one job-type YAML file; raise JobConfigError on any problem."""
    path = Path(path)
    job_type = path.stem
    if not re.match(JOB_TYPE_PATTERN, job_type):
        raise JobConfigError(
            path,
            [
                Problem(
                    "",
                    None,
                    f"the file name gives the job type {job_type!r}, which must match "
                    f"{JOB_TYPE_PATTERN} (lowercase letters, digits, '-')",
                )
            ],
        )
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise JobConfigError(path, [Problem("", None, "file is larger than 256 KiB")])
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JobConfigError(path, [Problem("", None, f"cannot read the file: {exc}")]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or str(exc)
        raise JobConfigError(
            path,
            [Problem("", mark.line + 1 if mark else None, f"YAML syntax error: {reason}")],
        ) from exc
    if data is None:
        raise JobConfigError(path, [Problem("", None, "the file is empty")])
    if not isinstance(data, dict):
        raise JobConfigError(
            path,
            [
                Problem(
                    "",
                    1,
                    f"the file must be a mapping of field: value, not a {type(data).__name__}",
                )
            ],
        )
    try:
        config = JobConfig.model_validate(data)
    except ValidationError as exc:
        lines = _key_lines(node) if node is not None else {}
        raise JobConfigError(path, _problems_from(exc, lines)) from None
    return JobTypeConfig(job_type=job_type, path=path, config=config)


def config_paths(directory: Path = JOB_CONFIGS_DIR) -> list[Path]:
    """Every job-type YAML file of a directory, sorted."""
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def load_job_configs(paths: Iterable[Path] | None = None) -> dict[str, JobTypeConfig]:
    """Load every config; raise one JobConfigError listing all files' problems."""
    loaded: dict[str, JobTypeConfig] = {}
    errors: list[JobConfigError] = []
    for path in paths if paths is not None else config_paths():
        try:
            item = load_job_config(path)
        except JobConfigError as exc:
            errors.append(exc)
            continue
        if item.job_type in loaded:
            other = loaded[item.job_type].path
            problem = Problem("", None, f"job type {item.job_type} is defined twice ({other})")
            errors.append(JobConfigError(path, [problem]))
        loaded[item.job_type] = item
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise JobConfigsError(errors)
    return loaded
