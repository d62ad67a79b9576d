"""OpenAPI description of the evaluation endpoints.

They are plain Django views (the hot path skips DRF's per-request work), so
drf-spectacular cannot see them; this postprocessing hook adds them to
``/api/schema/`` so the published schema covers the whole API.
"""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "properties": {"errorCode": {"type": "string"}, "errorDetails": {"type": "string"}},
}
_OFREP_ERROR = {
    "type": "object",
    "properties": {
        "key": {"type": "string"},
        "errorCode": {
            "type": "string",
            "enum": [
                "PARSE_ERROR",
                "TARGETING_KEY_MISSING",
                "INVALID_CONTEXT",
                "TYPE_MISMATCH",
                "FLAG_NOT_FOUND",
                "GENERAL",
            ],
        },
        "errorDetails": {"type": "string"},
    },
}
_OFREP_SUCCESS = {
    "type": "object",
    "properties": {
        "key": {"type": "string"},
        "value": {},
        "reason": {
            "type": "string",
            "enum": [
                "STATIC",
                "TARGETING_MATCH",
                "SPLIT",
                "DISABLED",
                "UNKNOWN",
            ],
        },
        "variant": {"type": "string"},
        "metadata": {"type": "object", "additionalProperties": True},
    },
}
_CONTEXT_BODY = {
    "type": "object",
    "properties": {"context": {"type": "object", "additionalProperties": True}},
}
_AUTH = [{"serverKey": []}]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Bad input (malformed JSON, non-object context, ...)",
        401: "Missing or wrong server key",
        403: "A key of another environment or scope",
        404: "Unknown flag or environment",
        413: "Body over 64 KiB",
        415: "Not application/json",
    }
    return {str(code): _json(_ERROR, text[code]) for code in codes}


PATHS: dict[str, Any] = {
    "/api/v1/evaluate": {
        "post": {
            "operationId": "evaluate",
            "tags": ["evaluation"],
            "summary": "Evaluate flags for a merchant (all flags when `flags` is omitted)",
            "security": _AUTH,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["context"],
                            "properties": {
                                "context": {
                                    "type": "object",
                                    "additionalProperties": True,
                                    "properties": {"merchant": {"type": "string"}},
                                },
                                "flags": {"type": "array", "items": {"type": "string"}},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "environment": {"type": "string"},
                            "version": {"type": "integer"},
                            "stale": {"type": "boolean"},
                            "flags": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "key": {"type": "string"},
                                        "value": {},
                                        "variation": {"type": "string"},
                                        "reason": {"type": "string"},
                                        "level": {"type": "string"},
                                        "error_code": {"type": "string"},
                                        "error_message": {"type": "string"},
                                    },
                                },
                            },
                        },
                    },
                    "Answers with reason, level and ruleset version",
                ),
                **_errors(400, 401, 403, 404, 413, 415),
            },
        }
    },
    "/ofrep/v1/evaluate/flags/{key}": {
        "post": {
            "operationId": "ofrep_evaluate_flag",
            "tags": ["OFREP"],
            "summary": "OpenFeature Remote Evaluation Protocol: one flag",
            "security": _AUTH,
            "parameters": [
                {
                    "name": "key",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _CONTEXT_BODY}},
            },
            "responses": {
                "200": _json(_OFREP_SUCCESS, "The flag's value, reason and variant"),
                "400": _json(
                    _OFREP_ERROR,
                    "PARSE_ERROR, TARGETING_KEY_MISSING, INVALID_CONTEXT, "
                    "TYPE_MISMATCH or GENERAL",
                ),
                "404": _json(_OFREP_ERROR, "FLAG_NOT_FOUND"),
                **_errors(401, 403, 413, 415),
            },
        }
    },
    "/ofrep/v1/evaluate/flags": {
        "post": {
            "operationId": "ofrep_evaluate_flags",
            "tags": ["OFREP"],
            "summary": "OpenFeature Remote Evaluation Protocol: every flag (ETag, 304)",
            "security": _AUTH,
            "parameters": [
                {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _CONTEXT_BODY}},
            },
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "flags": {
                                "type": "array",
                                "items": {"oneOf": [_OFREP_SUCCESS, _OFREP_ERROR]},
                            }
                        },
                    },
                    "Every flag's answer, with an ETag",
                ),
                "304": {
                    "description": "Unchanged since the ETag sent in If-None-Match"
                },
                **_errors(400, 401, 403, 413, 415),
            },
        }
    },
    "/api/v1/environments/{key}/ruleset": {
        "get": {
            "operationId": "environment_ruleset",
            "tags": ["evaluation"],
            "summary": "The environment's ruleset, for local evaluation (ETag = version, 304)",
            "security": _AUTH,
            "parameters": [
                {
                    "name": "key",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                },
                {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": _json(
                    {"type": "object", "additionalProperties": True},
                    "The plain ruleset data flags/engine.py compiles",
                ),
                "304": {
                    "description": "Unchanged since the ETag sent in If-None-Match"
                },
                **_errors(401, 403, 404),
            },
        }
    },
}


def add_evaluation_paths(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """Add the evaluation endpoints to the generated schema."""
    paths = result.setdefault("paths", {})
    for route, operations in PATHS.items():
        paths.setdefault(route, operations)
    return result
