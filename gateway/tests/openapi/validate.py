"""Validates an OpenAPI document read from stdin; exits non-zero with the reason when invalid."""
import json
import sys

from openapi_spec_validator import validate
from openapi_spec_validator.versions.shortcuts import get_spec_version

document = json.load(sys.stdin)
version = get_spec_version(document)
validate(document)
print(f"valid {version}")
